"""Entry points: build_corpus (and the trainers)."""
