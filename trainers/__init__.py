"""Downstream trainers (TorToiSe DVAE, autoregressive, CLVP)."""
