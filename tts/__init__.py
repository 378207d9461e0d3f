"""The TTS stack trained on the corpus (TorToiSe): front ends, models, training and inference."""
