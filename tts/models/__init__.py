"""TTS models: DVAE, autoregressive, CLVP, CVVP, diffusion decoder, UnivNet vocoder."""
