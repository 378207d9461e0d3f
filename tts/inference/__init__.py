"""Inference: autoregressive sampling and the synthesis chain."""
