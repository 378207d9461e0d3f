"""One Beam PTransform per stage, each a thin wrapper over pure functions."""
