"""Front ends: text tokenizer and cleaners, mel spectrograms."""
