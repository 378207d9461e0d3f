"""Command-line options of ``build_corpus`` and the validated settings they become.

speechmill's own options are parsed here; every other argument must be a Beam pipeline option
(``--runner``, ``--direct_running_mode``, ``--direct_num_workers``, ``--project`` ...) and is
handed to Beam. Anything else — a misspelling, an abbreviation — is an error before any work
starts, as is every bad value: one line that names the option, exit status 2.
"""
from __future__ import annotations

import argparse
import difflib
import os
from typing import List, Optional, Tuple

from acquisition.fetch import AcquireConfig
from asr.model import DEFAULT_ASR_MODEL, DEFAULT_FEATURE_EXTRACTOR, DEFAULT_TOKENIZER, AsrModelSpec
from asr.transcriber import TranscribeOptions
from audio.silence import SplitParams
from run.settings import CorpusSettings, OptionError
from storage import fs
from transforms.quality import AudioGates, QualityConfig

DESCRIPTION = """\
Build a transcribed speech corpus: acquire → split on silence → wav2vec2 CTC transcription →
quality filter → WebDataset shards + Parquet manifest.

Sources (one per line of --sources, or a .csv/.jsonl with a 'uri' column and optional speaker,
title, license, kind; or --sources FOLDER for every audio/video file under it):
  /data/book.m4b, file:///data/x.wav   a local file (relative paths: relative to the sources file)
  /data/audiobooks/                    a local folder: every audio/video file under it
  s3://bucket/a.mp3, gs://bucket/pre/  an object, or every object under a prefix (or a glob)
  https://www.youtube.com/@channel     a video, playlist or channel (any yt-dlp site)
  https://example.org/feed.xml         a podcast RSS/Atom feed: one item per episode
  https://example.org/live.m3u8        an HLS/DASH manifest (live streams are refused)
  https://example.org/talk.mp3         a direct link; other pages are probed (feed, media page)
A 'kind' column (direct, feed, ytdlp, folder) skips the guessing."""

EPILOG = """\
Any other option must be an Apache Beam pipeline option, for example:
  --direct_running_mode=multi_processing --direct_num_workers=4   (parallel on one machine)
  --runner=DaskRunner --dask_client_address=HOST:8786   (a dask.distributed cluster)
  --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp --setup_file=./setup.py
     (needs pip install 'apache-beam[gcp]==2.77.0'; see docs/cloud.md)

Output layout (under --output):
  shards/{prefix}-{NNNNNN}.tar   WebDataset samples: {key}.flac {key}.txt {key}.json
  manifest/{shard}.parquet       one row per kept sample
  rejected/run-{tag}.parquet     one row per rejected segment or failed source, with stage and reason
  sources/run-{tag}.parquet      one row per source: ok / failed / rejected / deferred, hours, segments
  runs/{tag}.json, report.json   per-run record (the commit) and whole-corpus totals

Reruns on the same --output skip sources that are done: kept, or failed for a reason about the
content itself (not audio, silent ...). Failures that depend on the world or on settings (not
found, network policy, timeouts, limits) are tried again. A run whose corpus-shaping settings
differ from the corpus's is refused unless --redo says which sources to reprocess.
"""

OPTION_OF = {  # setting path → the option a user types
    "split.min_clip_s": "--min_clip_s", "split.max_clip_s": "--max_clip_s", "split.min_silence_ms": "--min_silence_ms",
    "split.keep_silence_ms": "--keep_silence_ms", "split.silence_rel_db": "--silence_rel_db",
    "split.max_merge_gap_s": "--max_merge_gap_s", "quality.min_confidence": "--min_confidence",
    "quality.min_chars_per_s": "--min_chars_per_s", "quality.max_chars_per_s": "--max_chars_per_s",
    "quality.min_clip_s": "--min_clip_s", "quality.max_clip_s": "--max_clip_s",
    "quality.rate_outlier_iqr": "--rate_outlier_iqr", "quality.rate_outlier_min_clips": "--rate_outlier_iqr",
    "gates.min_speech_ratio": "--min_speech_ratio", "gates.min_bandwidth_hz": "--min_bandwidth_hz",
    "gates.max_clipping": "--max_clipping", "gates.min_snr_db": "--min_snr_db",
    "gates.min_dnsmos_ovrl": "--min_dnsmos_ovrl", "vad": "--vad", "speakers": "--speakers",
    "similar_k": "--similar_k",
    "output_sample_rate": "--output_sample_rate", "asr": "--asr_model (and --asr_revision)",
    "asr_tokenizer": "--asr_tokenizer", "asr_feature_extractor": "--asr_feature_extractor",
    "asr_chunk_s": "--asr_chunk_s", "keep_ctc_tokens": "--keep_ctc_tokens", "ytdlp_format": "--ytdlp_format",
}


DNSMOS_DEFAULT = object()  # --min_dnsmos_ovrl not given: 2.5 when DNSMOS runs, else off


def float_or_none(text: str) -> Optional[float]:
    """A number, or ``none`` to turn the gate off."""
    if text.strip().lower() in ("none", "off"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipelines.build_corpus", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    g = p.add_argument_group("input and output")
    g.add_argument("--sources", required=True,
                   help="a text file with one source per line, a .csv/.jsonl with a 'uri' column (and optional "
                        "speaker, title, license, kind), or a folder of audio (see above)")
    g.add_argument("--output", required=True, help="corpus directory (local, gs:// or s3://)")
    g.add_argument("--samples_per_shard", type=int, default=1000, help="samples per WebDataset shard (default 1000)")
    g.add_argument("--shard_prefix", default="shard", help="shard file name prefix (default 'shard')")
    g.add_argument("--output_sample_rate", type=int, default=22050,
                   help="sample rate of the FLAC clips in the shards, 8000..192000 (default 22050, TorToiSe's)")
    g.add_argument("--keep_work", action="store_true",
                   help="keep the run's work area (_work/{tag}: clip packs) after publishing")
    g.add_argument("--commit_every_hours", type=float, default=4.0,
                   help="publish the run in waves of about this many hours of audio, each as it completes, so a "
                        "crash loses at most the wave in flight and the rerun carries on after the last one "
                        "(default 4: about a minute or two of work at 150-250x realtime on 2 cores; larger waves start "
                        "fewer pipelines, which matters with several worker processes and on a cluster)")

    g = p.add_argument_group("reruns")
    g.add_argument("--redo", default=None, metavar="SELECTORS",
                   help="reprocess chosen sources, replacing their samples and rows: comma-separated "
                        "'all', 'failed', 'rejected', 'reason:R' (sources with a row of reason R, e.g. "
                        "reason:low_confidence), a source id, or a source's URI. Needed when corpus-shaping "
                        "settings differ from the corpus's")
    g.add_argument("--retry_failed", action="store_true",
                   help="try every failed source again, also those that failed for a final reason")
    g.add_argument("--verbose", action="store_true", help="show Beam's and the libraries' own log lines")

    g = p.add_argument_group("acquisition")
    g.add_argument("--staging_dir", default=None, help="where downloads are staged (default OUTPUT/_staging)")
    g.add_argument("--max_download_mb", type=float, default=2048.0, help="largest download accepted (default 2048 MB)")
    g.add_argument("--http_timeout_s", type=float, default=30.0, help="HTTP connect/read timeout (default 30 s)")
    g.add_argument("--download_timeout_s", type=float, default=3600.0,
                   help="wall-clock limit for one whole download, however slowly it trickles (default 3600 s)")
    g.add_argument("--min_download_kbps", type=float, default=None,
                   help="a download slower than this on average after its first seconds ends as a failure that "
                        "the next run retries, so one slow server does not hold a wave (default: no minimum)")
    g.add_argument("--http_retries", type=int, default=3,
                   help="retries of a transient failure (timeout, reset, 5xx, 429), with exponential backoff (default 3)")
    g.add_argument("--max_items_per_source", type=int, default=1000,
                   help="most items a run takes from one folder, feed (newest first), playlist or channel; "
                        "the rest are recorded as deferred and taken by the next runs (default 1000)")
    g.add_argument("--max_listed_items", type=int, default=100_000,
                   help="most items listed from one folder, feed, playlist or channel (default 100000)")
    g.add_argument("--max_duration_s", type=float, default=None,
                   help="refuse media longer than this (stated duration before download; decoding stops at it)")
    g.add_argument("--max_hours_total", type=float, default=None,
                   help="hours budget of a run: items are taken in sources-file order until their stated "
                        "durations fill it; the rest are deferred to the next run")
    g.add_argument("--allow_private_networks", nargs="?", const="all", default=None, metavar="CIDRS",
                   help="allow downloads from loopback/private/link-local addresses: all of them, or only "
                        "the given comma-separated networks (e.g. 127.0.0.0/8). Off by default: a URL or "
                        "redirect to such an address is refused")
    g.add_argument("--ytdlp_format", default="bestaudio/best",
                   help="yt-dlp format selector (default bestaudio/best: the best audio-only stream, not re-encoded)")

    g = p.add_argument_group("decoding and segmentation (split on silence)")
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
    g.add_argument("--max_scratch_gb", type=float, default=4.0,
                   help="most decoded PCM one source may produce (2 bytes a sample at the output rate; "
                        "default 4 GiB ≈ 27 h at 22.05 kHz): a file that decodes to more is rejected")
    g.add_argument("--scratch_dir", default=None, help="where decoded audio is held while a source is split "
                   "(default: the system temporary folder)")

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
    g.add_argument("--asr_accelerator", default=None, metavar="HINT",
                   help="a Beam accelerator resource hint for the transcription step only, e.g. "
                        "'type:nvidia-l4;count:1;install-nvidia-driver' on Dataflow (with --asr_device cuda); "
                        "the other steps run on plain workers (see docs/cloud.md)")
    g.add_argument("--asr_dtype", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="model weights' precision (default fp32; bf16 on a GPU is the fast choice; fp16 CUDA only)")
    g.add_argument("--asr_batch_seconds", type=float, default=None,
                   help="most audio in one model call, in seconds, at least --max_clip_s (default 160 on CUDA; "
                        "on CPU, where batching does not pay, --max_clip_s)")
    g.add_argument("--asr_chunk_s", type=float, default=30.0,
                   help="clips longer than this are transcribed in overlapping windows whose logits are "
                        "joined, so memory stays bounded (default 30)")
    g.add_argument("--keep_ctc_tokens", action="store_true",
                   help="store each clip's per-frame CTC label ids (20 ms frames) in its .json")

    g = p.add_argument_group("audio gates (before transcription; 'none' turns a gate off)")
    g.add_argument("--vad", choices=["silero", "energy"], default="silero",
                   help="speech detection: Silero VAD together with frame energy (default), or energy alone")
    g.add_argument("--min_speech_ratio", type=float_or_none, default=0.5,
                   help="lowest share of a clip that the VAD calls speech (default 0.5)")
    g.add_argument("--min_bandwidth_hz", type=float_or_none, default=4500.0,
                   help="lowest audio bandwidth: drops telephone-band and 8 kHz audio (default 4500; 9000 also "
                        "drops audio upsampled from 16 kHz)")
    g.add_argument("--max_clipping", type=float_or_none, default=0.002,
                   help="highest share of samples on a plateau at the clip's peak (default 0.002)")
    g.add_argument("--min_snr_db", type=float_or_none, default=15.0,
                   help="lowest speech-to-noise ratio in dB (default 15)")
    g.add_argument("--dnsmos", choices=["auto", "on", "off"], default="auto",
                   help="score DNSMOS P.835 (≈ 10-25x realtime per CPU core): auto runs it only with "
                        "--asr_device cuda and onnxruntime's CUDA provider (default auto)")
    g.add_argument("--min_dnsmos_ovrl", type=float_or_none, default=DNSMOS_DEFAULT,
                   help="lowest DNSMOS overall quality, 1..5 (default 2.5 when DNSMOS runs, else none)")
    g.add_argument("--keep_rejected_audio", action="store_true",
                   help="write rejected clips to rejected_shards/ (same format as shards/) to listen to them")

    g = p.add_argument_group("speakers")
    g.add_argument("--speakers", choices=["on", "off"], default="on",
                   help="tell voices apart: cut clips at speaker changes, cluster speakers per source and link them "
                        "across a channel or feed, pick conditioning clips (default on); off: one speaker per source")
    g.add_argument("--similar_k", type=int, default=3,
                   help="conditioning candidates per clip: other clips of the same speaker, most similar first (default 3)")

    g = p.add_argument_group("quality filter (after transcription; 'none' turns a rule off)")
    g.add_argument("--min_confidence", type=float_or_none, default=0.6,
                   help="lowest ASR confidence kept, 0..1 (default 0.6; see README for the formula)")
    g.add_argument("--min_chars_per_s", type=float_or_none, default=5.0,
                   help="slowest speaking rate kept, transcript characters per second (default 5)")
    g.add_argument("--max_chars_per_s", type=float_or_none, default=25.0,
                   help="fastest speaking rate kept, transcript characters per second (default 25)")
    g.add_argument("--rate_outlier_iqr", type=float_or_none, default=1.5,
                   help="reject a clip whose speaking rate is outside Q1-k*IQR..Q3+k*IQR of its own source's "
                        "clips (sources of 8 clips or more; default k=1.5)")
    return p


def _beam_parser():
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    def subclasses(c):
        for s in c.__subclasses__():
            yield s
            yield from subclasses(s)
    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in set(subclasses(PipelineOptions)):
        try:
            cls._add_argparse_args(parser)
        except Exception:  # an optional options class whose dependencies are missing
            continue
    return parser


def check_beam_args(beam_args: List[str], ours: argparse.ArgumentParser) -> None:
    """Raise ``OptionError`` for an argument that is neither ours nor a Beam pipeline option."""
    beam = _beam_parser()
    try:
        _, unknown = beam.parse_known_args(beam_args)
    except SystemExit:
        raise OptionError(f"bad Beam pipeline option in {' '.join(beam_args)}") from None
    flags = [a for a in unknown if a.startswith("-")]
    if flags or unknown:
        bad = (flags or unknown)[0]
        name = bad.split("=", 1)[0]
        known = list(ours._option_string_actions) + list(beam._option_string_actions)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise OptionError(f"unknown option {name}{hint} (not a speechmill option nor a Beam pipeline option)")


def check_output(output: str) -> None:
    """Refuse an output the run could not write, before any work starts."""
    if not fs.is_local(output):
        return
    path = fs.local_path(output)
    probe_dir = path
    while not os.path.exists(probe_dir):
        parent = os.path.dirname(probe_dir)
        if parent == probe_dir:
            break
        probe_dir = parent
    if os.path.exists(path) and not os.path.isdir(path):
        raise OptionError(f"--output {output} exists and is not a folder")
    if not os.path.isdir(probe_dir) or not os.access(probe_dir, os.W_OK | os.X_OK):
        raise OptionError(f"--output {output}: cannot create or write it (no write access to {probe_dir})")
    try:
        os.makedirs(path, exist_ok=True)
        fd, tmp = __import__("tempfile").mkstemp(prefix=".write-check-", dir=path)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise OptionError(f"--output {output}: cannot write there ({e.strerror or e})") from None


def _redo(value: Optional[str]) -> Tuple[str, ...]:
    if value is None:
        return ()
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise OptionError("--redo needs at least one selector: all, failed, rejected, reason:R, a source id or URI")
    return items


def parse_args(argv: Optional[List[str]]) -> Tuple[CorpusSettings, List[str]]:
    """Validated settings and the arguments left for Beam; raises ``OptionError`` naming a bad option."""
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    from run.engine import runner_args
    beam_args = runner_args(beam_args)
    check_beam_args(beam_args, parser)
    try:
        return _settings(args), beam_args
    except OptionError:
        raise
    except ValueError as e:
        raise OptionError(str(e)) from None


def _settings(args) -> CorpusSettings:
    output = args.output.rstrip("/") or args.output
    if fs.is_local(output):
        output = os.path.abspath(fs.local_path(output))
    if args.samples_per_shard < 1:
        raise OptionError(f"--samples_per_shard must be >= 1, got {args.samples_per_shard}")
    if not 8000 <= args.output_sample_rate <= 192000:
        raise OptionError(f"--output_sample_rate must be 8000..192000, got {args.output_sample_rate}")
    if args.decode_timeout_s <= 0:
        raise OptionError(f"--decode_timeout_s must be > 0, got {args.decode_timeout_s:g}")
    if args.max_scratch_gb <= 0:
        raise OptionError(f"--max_scratch_gb must be > 0, got {args.max_scratch_gb:g}")
    if args.asr_batch_seconds is not None and args.asr_batch_seconds < args.max_clip_s:
        raise OptionError(f"--asr_batch_seconds ({args.asr_batch_seconds:g}) must be at least --max_clip_s "
                          f"({args.max_clip_s:g}): a clip must fit in one model call")
    if args.commit_every_hours <= 0:
        raise OptionError(f"--commit_every_hours must be > 0, got {args.commit_every_hours:g}")
    if args.asr_accelerator is not None and (not args.asr_accelerator.startswith("type:")
                                             or any(c.isspace() for c in args.asr_accelerator)):
        raise OptionError(f"--asr_accelerator {args.asr_accelerator!r}: expected a Beam accelerator hint such as "
                          "'type:nvidia-l4;count:1;install-nvidia-driver' (no spaces)")
    if args.similar_k < 0:
        raise OptionError(f"--similar_k must be >= 0, got {args.similar_k}")
    if args.speakers == "on":
        from speakers.encoder import EncoderUnavailable, weights_path
        try:
            weights_path()
        except EncoderUnavailable as e:
            raise OptionError(f"--speakers on: {e}") from None
    if args.scratch_dir and not os.path.isdir(args.scratch_dir):
        raise OptionError(f"--scratch_dir {args.scratch_dir} is not a folder")
    split = SplitParams(min_clip_s=args.min_clip_s, max_clip_s=args.max_clip_s,
                        min_silence_ms=args.min_silence_ms, keep_silence_ms=args.keep_silence_ms,
                        silence_rel_db=args.silence_rel_db, max_merge_gap_s=args.max_merge_gap_s).validate()
    quality = QualityConfig(min_confidence=args.min_confidence, min_chars_per_s=args.min_chars_per_s,
                            max_chars_per_s=args.max_chars_per_s, min_clip_s=args.min_clip_s,
                            max_clip_s=args.max_clip_s, rate_outlier_iqr=args.rate_outlier_iqr).validate()
    acquire = AcquireConfig(staging_dir=args.staging_dir or fs.join(output, "_staging"),
                            max_download_mb=args.max_download_mb, http_timeout_s=args.http_timeout_s,
                            download_timeout_s=args.download_timeout_s,
                            min_download_kbps=args.min_download_kbps,
                            http_retries=args.http_retries, max_items_per_source=args.max_items_per_source,
                            max_listed_items=args.max_listed_items,
                            max_duration_s=args.max_duration_s, max_hours_total=args.max_hours_total,
                            allow_private_networks=args.allow_private_networks,
                            ytdlp_format=args.ytdlp_format).validate()
    asr = AsrModelSpec(model=args.asr_model, tokenizer=args.asr_tokenizer,
                       feature_extractor=args.asr_feature_extractor, revision=args.asr_revision,
                       device=args.asr_device, dtype=args.asr_dtype).validate()
    transcribe = TranscribeOptions(chunk_s=args.asr_chunk_s, keep_ctc_tokens=args.keep_ctc_tokens).validate()
    from audio import dnsmos
    try:
        dnsmos_on = dnsmos.resolve(args.dnsmos, asr.device)
    except dnsmos.DnsmosUnavailable as e:
        raise OptionError(f"--dnsmos on: {e}") from None
    min_dnsmos = args.min_dnsmos_ovrl
    if min_dnsmos is DNSMOS_DEFAULT:
        min_dnsmos = 2.5 if dnsmos_on else None
    if min_dnsmos is not None and not dnsmos_on:
        raise OptionError("--min_dnsmos_ovrl needs DNSMOS to run: add --dnsmos on (≈ 10-25x realtime per CPU core)")
    if args.min_speech_ratio is not None and args.vad != "silero":
        raise OptionError("--min_speech_ratio needs --vad silero (or --min_speech_ratio none)")
    gates = AudioGates(min_speech_ratio=args.min_speech_ratio, min_bandwidth_hz=args.min_bandwidth_hz,
                       max_clipping=args.max_clipping, min_snr_db=args.min_snr_db,
                       min_dnsmos_ovrl=min_dnsmos).validate()
    from transforms.shard import ShardConfig
    ShardConfig(shards_dir="", manifest_dir="", prefix=args.shard_prefix).validate()
    return CorpusSettings(
        sources=args.sources, output=output, asr=asr, transcribe=transcribe, split=split, quality=quality,
        acquire=acquire, gates=gates, vad=args.vad, dnsmos=dnsmos_on, keep_rejected_audio=args.keep_rejected_audio,
        speakers=args.speakers == "on", similar_k=args.similar_k, commit_every_hours=args.commit_every_hours,
        output_sample_rate=args.output_sample_rate,
        asr_batch_seconds=args.asr_batch_seconds or (160.0 if asr.device.startswith("cuda") else args.max_clip_s),
        asr_accelerator=args.asr_accelerator,
        samples_per_shard=args.samples_per_shard, shard_prefix=args.shard_prefix,
        decode_timeout_s=args.decode_timeout_s, max_scratch_gb=args.max_scratch_gb, scratch_dir=args.scratch_dir,
        keep_work=args.keep_work, redo=_redo(args.redo), retry_failed=args.retry_failed, verbose=args.verbose)
