#!/usr/bin/env bash
# Set everything up, synthesise a few minutes of speech, and build a demo corpus in ./demo/corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
python -m pipelines.make_demo demo
# The demo model has random weights, so its transcripts are gibberish and its confidence means
# nothing: the quality thresholds are opened wide to keep every clip.
python -m pipelines.build_corpus --sources demo/sources.txt --output demo/corpus \
  --asr_model demo/tiny-wav2vec2 --min_confidence 0 --min_chars_per_s 0 --max_chars_per_s 1000 \
  --samples_per_shard 8 "$@"
echo "[demo] corpus in demo/corpus: shards/*.tar, manifest/*.parquet, sources/*.parquet, report.json (rejected/*.parquet when something was rejected)"
