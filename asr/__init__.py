"""wav2vec2 CTC transcription: loading, batching, greedy decoding with confidence, RunInference handler."""
