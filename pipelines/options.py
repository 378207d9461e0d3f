"""Command-line options of ``build_corpus`` and the validated settings they become.

speechmill's own options are parsed here; every other argument is handed to Beam as a pipeline
option (``--runner``, ``--direct_running_mode``, ``--direct_num_workers``, ``--project`` ...).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

from acquisition.fetch import AcquireConfig
from asr.model import DEFAULT_ASR_MODEL, DEFAULT_FEATURE_EXTRACTOR, DEFAULT_TOKENIZER, AsrModelSpec
from asr.transcriber import TranscribeOptions
from audio.silence import SplitParams
from corpus import fs
from transforms.quality import QualityConfig

EPILOG = """\
Any other option is passed to Apache Beam, for example:
  --direct_running_mode=multi_processing --direct_num_workers=4   (parallel on one machine)
  --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp --setup_file=./setup.py

Output layout (under --output):
  shards/{prefix}-{NNNNNN}.tar   WebDataset samples: {key}.flac {key}.txt {key}.json
  manifest/{shard}.parquet       one row per kept sample
  rejected/run-{tag}.parquet     one row per rejected segment or failed source, with stage and reason
  sources/run-{tag}.parquet      one row per source: ok / failed / rejected, hours, segments
  runs/{tag}.json, report.json   per-run and whole-corpus totals

A rerun on the same --output skips every source already recorded in sources/.
"""


@dataclass(frozen=True)
class CorpusSettings:
    sources: str
    output: str
    asr: AsrModelSpec
    split: SplitParams
    quality: QualityConfig
    acquire: AcquireConfig
    transcribe: TranscribeOptions = TranscribeOptions()
    output_sample_rate: int = 22050
    asr_batch_seconds: float = 160.0
    samples_per_shard: int = 1000
    shard_prefix: str = "shard"
    decode_timeout_s: float = 3600.0
    keep_work: bool = False

    def fingerprint(self) -> dict:
        """The settings that change what a run writes (paths excluded), for the run tag."""
        d = dataclasses.asdict(self)
        for k in ("sources", "output", "keep_work"):
            d.pop(k)
        d["acquire"] = {k: d["acquire"][k] for k in ("max_items_per_source", "max_duration_s", "max_hours_total",
                                                      "ytdlp_format")}
        d["asr"] = self.asr.label
        return d


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipelines.build_corpus",
        description="Build a transcribed speech corpus: acquire → split on silence → wav2vec2 CTC "
                    "transcription → quality filter → WebDataset shards + Parquet manifest.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("input and output")
    g.add_argument("--sources", required=True,
                   help="text file with one source per line (local path, file://, http(s):// link to an "
                        "audio or video file, gs:// or s3:// object), or .csv / .jsonl with a 'uri' column "
                        "and optional speaker, title, license. Relative paths are relative to this file.")
    g.add_argument("--output", required=True, help="corpus directory (local, gs:// or s3://)")
    g.add_argument("--samples_per_shard", type=int, default=1000, help="samples per WebDataset shard (default 1000)")
    g.add_argument("--shard_prefix", default="shard", help="shard file name prefix (default 'shard')")
    g.add_argument("--output_sample_rate", type=int, default=22050,
                   help="sample rate of the FLAC clips in the shards (default 22050, TorToiSe's rate)")
    g.add_argument("--keep_work", action="store_true",
                   help="keep the run's work area (_work/{tag}: clip packs) after publishing")

    g = p.add_argument_group("acquisition")
    g.add_argument("--staging_dir", default=None, help="where downloads are staged (default OUTPUT/_staging)")
    g.add_argument("--max_download_mb", type=float, default=2048.0, help="largest download accepted (default 2048 MB)")
    g.add_argument("--http_timeout_s", type=float, default=30.0, help="HTTP connect/read timeout (default 30 s)")
    g.add_argument("--http_retries", type=int, default=3,
                   help="retries of a transient failure (timeout, reset, 5xx, 429), with exponential backoff (default 3)")
    g.add_argument("--max_items_per_source", type=int, default=1000,
                   help="most items a folder, feed (newest first), playlist or channel expands into (default 1000)")
    g.add_argument("--max_duration_s", type=float, default=None,
                   help="refuse media longer than this (stated duration before download, decoded duration after)")
    g.add_argument("--max_hours_total", type=float, default=None,
                   help="hours budget of a run: items are taken in sources-file order until their stated "
                        "durations fill it; the rest are deferred to the next run")
    g.add_argument("--allow_private_networks", nargs="?", const="all", default=None, metavar="CIDRS",
                   help="allow downloads from loopback/private/link-local addresses: all of them, or only "
                        "the given comma-separated networks (e.g. 127.0.0.0/8). Off by default: a URL or "
                        "redirect to such an address is refused")
    g.add_argument("--ytdlp_format", default="bestaudio/best",
                   help="yt-dlp format selector (default bestaudio/best: the best audio-only stream, not re-encoded)")

    g = p.add_argument_group("segmentation (split on silence)")
    g.add_argument("--min_clip_s", type=float, default=4.0, help="shortest clip kept (default 4 s)")
    g.add_argument("--max_clip_s", type=float, default=20.0, help="longest clip kept (default 20 s)")
    g.add_argument("--min_silence_ms", type=float, default=600.0,
                   help="a silence at least this long is a place to cut (default 600 ms)")
    g.add_argument("--keep_silence_ms", type=float, default=200.0,
                   help="silence kept at each end of a clip (default 200 ms, at most half of --min_silence_ms)")
    g.add_argument("--silence_rel_db", type=float, default=30.0,
                   help="a frame is silent when it is this many dB below the file's level "
                        "(its 95th-percentile frame energy; default 30)")
    g.add_argument("--max_merge_gap_s", type=float, default=2.0,
                   help="a too-short piece is merged with a neighbour only across a gap this short (default 2 s)")
    g.add_argument("--decode_timeout_s", type=float, default=3600.0,
                   help="wall-clock limit for decoding one source (default 3600 s)")

    g = p.add_argument_group("transcription")
    g.add_argument("--asr_model", default=DEFAULT_ASR_MODEL,
                   help=f"Hugging Face AutoModelForCTC id or local directory (default {DEFAULT_ASR_MODEL})")
    g.add_argument("--asr_tokenizer", default=None,
                   help=f"tokenizer id or directory (default: the model's own; {DEFAULT_TOKENIZER} "
                        "for the default model)")
    g.add_argument("--asr_feature_extractor", default=None,
                   help=f"feature extractor id or directory (default: the model's own; "
                        f"{DEFAULT_FEATURE_EXTRACTOR} for the default model)")
    g.add_argument("--asr_revision", default=None, help="model revision (commit) to pin")
    g.add_argument("--asr_device", default="cpu", help="torch device for the model (cpu, cuda, cuda:1 ...)")
    g.add_argument("--asr_dtype", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="model weights' precision (default fp32; bf16 on a GPU is the fast choice; fp16 CUDA only)")
    g.add_argument("--asr_batch_seconds", type=float, default=None,
                   help="most audio in one model call, in seconds (default 160 on CUDA; on CPU, where "
                        "batching does not pay, --max_clip_s)")
    g.add_argument("--asr_chunk_s", type=float, default=30.0,
                   help="clips longer than this are transcribed in overlapping windows whose logits are "
                        "joined, so memory stays bounded (default 30)")
    g.add_argument("--keep_ctc_tokens", action="store_true",
                   help="store each clip's per-frame CTC label ids (20 ms frames) in its .json")

    g = p.add_argument_group("quality filter")
    g.add_argument("--min_confidence", type=float, default=0.6,
                   help="lowest ASR confidence kept, 0..1 (default 0.6; see README for the formula)")
    g.add_argument("--min_chars_per_s", type=float, default=5.0,
                   help="slowest speaking rate kept, transcript characters per second (default 5)")
    g.add_argument("--max_chars_per_s", type=float, default=25.0,
                   help="fastest speaking rate kept, transcript characters per second (default 25)")
    return p


def parse_args(argv: Optional[List[str]]) -> Tuple[CorpusSettings, List[str]]:
    """Validated settings and the arguments left for Beam; raises ``ValueError`` naming a bad option."""
    args, beam_args = build_parser().parse_known_args(argv)
    output = args.output.rstrip("/") or args.output
    if fs.is_local(output):
        output = os.path.abspath(fs.local_path(output))
    split = SplitParams(min_clip_s=args.min_clip_s, max_clip_s=args.max_clip_s,
                        min_silence_ms=args.min_silence_ms, keep_silence_ms=args.keep_silence_ms,
                        silence_rel_db=args.silence_rel_db, max_merge_gap_s=args.max_merge_gap_s).validate()
    quality = QualityConfig(min_confidence=args.min_confidence, min_chars_per_s=args.min_chars_per_s,
                            max_chars_per_s=args.max_chars_per_s, min_clip_s=args.min_clip_s,
                            max_clip_s=args.max_clip_s).validate()
    acquire = AcquireConfig(staging_dir=args.staging_dir or fs.join(output, "_staging"),
                            max_download_mb=args.max_download_mb, http_timeout_s=args.http_timeout_s,
                            http_retries=args.http_retries, max_items_per_source=args.max_items_per_source,
                            max_duration_s=args.max_duration_s, max_hours_total=args.max_hours_total,
                            allow_private_networks=args.allow_private_networks,
                            ytdlp_format=args.ytdlp_format).validate()
    asr = AsrModelSpec(model=args.asr_model, tokenizer=args.asr_tokenizer,
                       feature_extractor=args.asr_feature_extractor, revision=args.asr_revision,
                       device=args.asr_device, dtype=args.asr_dtype).validate()
    transcribe = TranscribeOptions(chunk_s=args.asr_chunk_s, keep_ctc_tokens=args.keep_ctc_tokens).validate()
    settings = CorpusSettings(
        sources=args.sources, output=output, asr=asr, transcribe=transcribe, split=split, quality=quality, acquire=acquire,
        output_sample_rate=args.output_sample_rate,
        asr_batch_seconds=args.asr_batch_seconds or (160.0 if asr.device.startswith("cuda") else args.max_clip_s),
        samples_per_shard=args.samples_per_shard, shard_prefix=args.shard_prefix,
        decode_timeout_s=args.decode_timeout_s, keep_work=args.keep_work)
    return settings, beam_args
