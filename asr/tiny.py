"""Build a tiny wav2vec2 CTC model with random weights, for the demo and the tests.

``python -m asr.tiny DIR`` writes a ~200 KB model, tokenizer (character vocabulary) and feature
extractor that load with ``from_pretrained(DIR)`` exactly like a hub model. Its transcripts are
gibberish: it exists to exercise the real loading, batching and decoding code without downloads.
"""
from __future__ import annotations

import argparse
import json
import os

CHARS = list("abcdefghijklmnopqrstuvwxyz'")


def build_tiny_model(out_dir: str, seed: int = 0, stable_layer_norm: bool = True, hidden: int = 32,
                     layers: int = 2) -> str:
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )
    os.makedirs(out_dir, exist_ok=True)
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2}
    for c in CHARS:
        vocab[c] = len(vocab)
    vocab_path = os.path.join(out_dir, "vocab.json")
    with open(vocab_path, "w") as f:
        json.dump(vocab, f)
    tokenizer = Wav2Vec2CTCTokenizer(vocab_path, unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|")
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                  return_attention_mask=stable_layer_norm)
    cfg = Wav2Vec2Config(
        vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=2 * hidden, conv_dim=(32,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer" if stable_layer_norm else "group", do_stable_layer_norm=stable_layer_norm,
        pad_token_id=0, ctc_loss_reduction="mean")
    torch.manual_seed(seed)
    model = Wav2Vec2ForCTC(cfg)
    model.save_pretrained(out_dir, safe_serialization=True)
    Wav2Vec2Processor(feature_extractor=fe, tokenizer=tokenizer).save_pretrained(out_dir)
    return out_dir


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m asr.tiny", description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", help="directory to write the model into")
    p.add_argument("--seed", type=int, default=0, help="weight initialisation seed (default 0)")
    p.add_argument("--group_norm", action="store_true",
                   help="build the group-norm (wav2vec2-base) family instead of layer-norm (large)")
    args = p.parse_args(argv)
    build_tiny_model(args.out_dir, seed=args.seed, stable_layer_norm=not args.group_norm)
    print(args.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
