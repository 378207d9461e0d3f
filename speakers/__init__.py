"""Voices: embeddings, speaker changes inside clips, speaker ids and conditioning candidates."""
