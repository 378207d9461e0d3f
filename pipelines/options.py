"""Command-line options of ``build_corpus`` and the validated settings they become.

speechmill's own options are parsed here; every other argument must be a Beam pipeline option
(``--runner``, ``--direct_running_mode``, ``--direct_num_workers``, ``--project`` ...) and is
handed to Beam. Anything else — a misspelling, an abbreviation — is an error before any work
starts, as is every bad value: one line that names the option, exit status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import tempfile
import typing
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from asr.builtin import OFFLINE_ALIAS
from asr.spec import DEFAULT_ASR_MODEL, DEFAULT_FEATURE_EXTRACTOR, DEFAULT_TOKENIZER, AsrModelSpec
from audio.silence import SplitParams
from pipelines.option_values import float_or_none, int_or_none, number
from run.settings import CorpusSettings, OptionError
from schemas.settings import SettingError
from speakers.params import PRECISIONS
from storage import fs

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


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one ``OptionError`` line (exit status 2 in ``build_corpus``)."""

    def error(self, message):
        raise OptionError(message)


def _arg(group, option: str, to: Union[str, Tuple[str, ...]], convert: Callable[[Any], Any] = lambda v: v,
         **kw) -> argparse.Action:
    """One option: its parser entry and the settings field(s) it sets (``to``: their paths).

    An option left out sets nothing, so the field's own default holds."""
    if not kw.get("required"):
        kw["default"] = argparse.SUPPRESS
    action = group.add_argument(option, **kw)
    action.setting_paths = (to,) if isinstance(to, str) else tuple(to)
    action.convert = convert
    return action


def option_of(parser: argparse.ArgumentParser) -> Dict[str, str]:
    """Each settings field's path → the option that sets it: the one table, read from the parser."""
    table = {}
    for action in parser._actions:
        for path in getattr(action, "setting_paths", ()):
            table[path] = action.option_strings[0]
    return table


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m pipelines.build_corpus", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    g = p.add_argument_group("input and output")
    _arg(g, "--sources", "sources", required=True,
                   help="a text file with one source per line, a .csv/.jsonl with a 'uri' column (and optional "
                        "speaker, title, license, kind), or a folder of audio (see above)")
    _arg(g, "--output", "output", convert=_output, required=True, help="corpus directory (local, gs:// or s3://)")
    _arg(g, "--samples_per_shard", "samples_per_shard", type=int, help="samples per WebDataset shard (default 1000)")
    _arg(g, "--shard_prefix", "shard_prefix", help="shard file name prefix (default 'shard')")
    _arg(g, "--output_sample_rate", "output_sample_rate", type=int,
         help="sample rate of the FLAC clips in the shards, 8000..192000 (default 22050, TorToiSe's)")
    _arg(g, "--keep_work", "keep_work", action="store_true",
                   help="keep the run's work area (_work/{tag}: clip packs) after publishing")
    _arg(g, "--commit_every_hours", "commit_every_hours", type=number,
         help="publish the run in waves of about this many hours of audio, each as it completes, so a "
              "crash loses at most the wave in flight and the rerun carries on after the last one; a longer "
              "source is worked in parts of this length, each saved as it completes "
              "(default 4: about a minute or two of work at 150-250x realtime on 2 cores; larger waves start "
              "fewer pipelines, which matters with several worker processes and on a cluster)")

    g = p.add_argument_group("reruns")
    _arg(g, "--redo", "redo", convert=_redo, metavar="SELECTORS",
                   help="reprocess chosen sources, replacing their samples and rows: comma-separated "
                        "'all', 'failed', 'rejected', 'reason:R' (sources with a row of reason R, e.g. "
                        "reason:low_confidence), a source id, or a source's URI. Needed when corpus-shaping "
                        "settings differ from the corpus's")
    _arg(g, "--retry_failed", "retry_failed", action="store_true",
                   help="try every failed source again, also those that failed for a final reason")
    _arg(g, "--verbose", "verbose", action="store_true", help="show Beam's and the libraries' own log lines")

    g = p.add_argument_group("acquisition")
    _arg(g, "--staging_dir", "acquire.staging_dir", help="where downloads are staged (default OUTPUT/_staging)")
    _arg(g, "--max_download_mb", "acquire.max_download_mb", type=number,
         help="largest download accepted (default 2048 MB)")
    _arg(g, "--http_timeout_s", "acquire.http_timeout_s", type=number, help="HTTP connect/read timeout (default 30 s)")
    _arg(g, "--download_timeout_s", "acquire.download_timeout_s", type=number,
         help="wall-clock limit for one whole download, however slowly it trickles (default 3600 s)")
    _arg(g, "--min_download_kbps", "acquire.min_download_kbps", type=number,
         help="a download slower than this on average after its first seconds ends as a failure that "
              "the next run retries, so one slow server does not hold a wave (default: no minimum)")
    _arg(g, "--http_retries", "acquire.http_retries", type=int,
         help="retries of a transient failure (timeout, reset, 5xx, 429), with exponential backoff (default 3)")
    _arg(g, "--max_items_per_source", "acquire.max_items_per_source", type=int,
         help="most items a run takes from one folder, feed (newest first), playlist or channel; "
              "the rest are recorded as deferred and taken by the next runs (default 1000)")
    _arg(g, "--max_listed_items", "acquire.max_listed_items", type=int,
         help="most items listed from one folder, feed, playlist or channel (default 100000)")
    _arg(g, "--max_duration_s", "acquire.max_duration_s", type=number,
         help="refuse media longer than this (stated duration before download; decoding stops at it)")
    _arg(g, "--max_hours_total", "acquire.max_hours_total", type=number,
         help="hours budget of a run: items are taken in sources-file order until their stated "
              "durations fill it; the rest are deferred to the next run")
    _arg(g, "--allow_private_networks", "acquire.allow_private_networks", nargs="?", const="all", metavar="CIDRS",
                   help="allow downloads from loopback/private/link-local addresses: all of them, or only "
                        "the given comma-separated networks (e.g. 127.0.0.0/8). Off by default: a URL or "
                        "redirect to such an address is refused")
    _arg(g, "--ytdlp_format", "acquire.ytdlp_format",
         help="yt-dlp format selector (default bestaudio/best: the best audio-only stream, not re-encoded)")

    g = p.add_argument_group("decoding and segmentation (split on silence)")
    _arg(g, "--min_clip_s", ("split.min_clip_s", "quality.min_clip_s"), type=number,
         help="shortest clip kept (default 4 s)")
    _arg(g, "--max_clip_s", ("split.max_clip_s", "quality.max_clip_s"), type=number,
         help="longest clip kept (default 20 s)")
    _arg(g, "--min_silence_ms", "split.min_silence_ms", type=number,
         help="a silence at least this long is a place to cut (default 600 ms)")
    _arg(g, "--keep_silence_ms", "split.keep_silence_ms", type=number,
         help="silence kept at each end of a clip (default 200 ms, at most half of --min_silence_ms)")
    _arg(g, "--silence_rel_db", "split.silence_rel_db", type=number,
         help="a frame is silent when it is this many dB below the file's level "
              "(its 95th-percentile frame energy; default 30)")
    _arg(g, "--max_merge_gap_s", "split.max_merge_gap_s", type=number,
         help="a too-short piece is merged with a neighbour only across a gap this short (default 2 s)")
    _arg(g, "--decode_timeout_s", "decode_timeout_s", type=number,
         help="wall-clock limit for decoding one source (default 3600 s)")
    _arg(g, "--max_scratch_gb", "max_scratch_gb", type=number,
         help="most decoded PCM one source may produce (2 bytes a sample at the output rate; "
              "default 4 GiB ≈ 27 h at 22.05 kHz): a file that decodes to more is rejected")
    _arg(g, "--scratch_dir", "scratch_dir", help="where decoded audio is held while a source is split "
                   "(default: the system temporary folder)")

    g = p.add_argument_group("transcription")
    _arg(g, "--asr_model", "asr.model",
         help=f"a CTC model (Hugging Face AutoModelForCTC id or local directory; default {DEFAULT_ASR_MODEL}) "
              f"or a Whisper model: {OFFLINE_ALIAS} (bundled, works offline), a CTranslate2 folder, a "
              "faster-whisper size name or a Hugging Face Whisper id or folder (see docs/transcription.md)")
    _arg(g, "--asr_tokenizer", "asr.tokenizer",
         help=f"tokenizer id or directory (default: the model's own; {DEFAULT_TOKENIZER} "
              "for the default model)")
    _arg(g, "--asr_feature_extractor", "asr.feature_extractor",
         help=f"feature extractor id or directory (default: the model's own; "
              f"{DEFAULT_FEATURE_EXTRACTOR} for the default model)")
    _arg(g, "--asr_revision", "asr.revision", help="model revision (commit) to pin")
    _arg(g, "--asr_device", "asr.device", help="torch device for the model (cpu, cuda, cuda:1 ...)")
    _arg(g, "--asr_accelerator", "asr_accelerator", metavar="HINT",
                   help="a Beam accelerator resource hint for the transcription step only, e.g. "
                        "'type:nvidia-l4;count:1;install-nvidia-driver' on Dataflow (with --asr_device cuda); "
                        "the other steps run on plain workers (see docs/cloud.md)")
    _arg(g, "--asr_dtype", "asr.dtype", choices=["fp32", "bf16", "fp16"],
                   help="model weights' precision (default fp32; bf16 on a GPU is the fast choice; fp16 CUDA only)")
    _arg(g, "--asr_batch_seconds", "asr_batch_seconds", type=number,
         help="most audio in one model call, in seconds, at least --max_clip_s (default 160 on CUDA; "
              "on CPU, where batching does not pay, --max_clip_s)")
    _arg(g, "--asr_chunk_s", "transcribe.chunk_s", type=number,
         help="clips longer than this are transcribed in overlapping windows whose logits are "
              "joined, so memory stays bounded (default 30)")
    _arg(g, "--keep_ctc_tokens", "transcribe.keep_ctc_tokens", action="store_true",
                   help="store each clip's per-frame CTC label ids (20 ms frames) in its .json")

    g = p.add_argument_group("audio gates (before transcription; 'none' turns a gate off)")
    _arg(g, "--vad", "vad", choices=["silero", "energy"],
         help="speech detection: Silero VAD together with frame energy (default), or energy alone")
    _arg(g, "--min_speech_ratio", "gates.min_speech_ratio", type=float_or_none,
         help="lowest share of a clip that the VAD calls speech (default 0.5)")
    _arg(g, "--min_bandwidth_hz", "gates.min_bandwidth_hz", type=float_or_none,
         help="lowest audio bandwidth: drops telephone-band and 8 kHz audio and low-bitrate codecs "
              "(MP3 16 kbps: 5.6 kHz, Opus 8 kbps: 4.9 kHz) while 16 kHz sources (7.9 kHz) pass "
              "(default 6500; 9000 also drops audio upsampled from 16 kHz)")
    _arg(g, "--max_clipping", "gates.max_clipping", type=float_or_none,
         help="highest share of samples on a plateau at the clip's peak (default 0.002)")
    _arg(g, "--min_snr_db", "gates.min_snr_db", type=float_or_none,
         help="lowest speech-to-noise ratio in dB (default 15)")
    _arg(g, "--max_rt60_s", "gates.max_rt60_s", type=float_or_none,
         help="highest reverberation time in seconds, estimated from the decays of all of a source's clips "
              "(default 0.45; see docs/clean-clips.md for what it catches)")
    _arg(g, "--dnsmos", "dnsmos", choices=["auto", "on", "off"],
         help="score DNSMOS P.835 (≈ 10-25x realtime per CPU core): auto runs it only with "
              "--asr_device cuda and onnxruntime's CUDA provider (default auto)")
    _arg(g, "--min_dnsmos_ovrl", "gates.min_dnsmos_ovrl", type=float_or_none,
         help="lowest DNSMOS overall quality, 1..5 (default 2.5 when DNSMOS runs, else none)")
    _arg(g, "--keep_rejected_audio", "keep_rejected_audio", action="store_true",
                   help="write rejected clips to rejected_shards/ (same format as shards/) to listen to them")

    g = p.add_argument_group("speakers")
    _arg(g, "--speakers", "speakers", convert=lambda v: v == "on", choices=["on", "off"],
         help="tell voices apart: cut clips at speaker changes, cluster speakers per source and link them "
              "across a channel or feed, pick conditioning clips (default on); off: one speaker per source")
    _arg(g, "--similar_k", "similar_k", type=int,
         help="conditioning candidates per clip: other clips of the same speaker, most similar first (default 3)")
    _arg(g, "--min_voice_s", "voices.min_voice_s", type=number,
         help="seconds of speech a source needs from a voice before it counts as one (default 6; docs/speakers.md)")
    _arg(g, "--same_voice_similarity", "voices.same_voice_similarity", type=number,
         help="a source's candidate voices (of utterances, of clips) this alike (cosine) are one voice (default 0.75)")
    _arg(g, "--voice_change_margin", "voices.voice_change_margin", type=number,
         help="an utterance is evidence for a voice when nearer to it than to the next by this much (default 0.05)")
    _arg(g, "--voice_change_evidence_s", "voices.voice_change_evidence_s", type=number,
         help="a clip is cut at a change of voice only with this many seconds of evidence in a row each side; "
              "weaker changes are kept whole with a voice_change_score (default 1)")
    _arg(g, "--min_edge_turn_s", "voices.min_edge_turn_s", type=number,
         help="in a source of several voices, a piece of at least this many seconds at the edge of a run of short "
              "utterances nearer another voice (its tail, a short reply) is cut out; over 1 s: never (default 0.5)")
    _arg(g, "--voice_change_pause_s", "voices.voice_change_pause_s", type=number,
         help="a change of voice with less quiet than this between the turns (an overlap, a quick reply) is cut "
              "only roughly: each turn gives up --voice_change_guard_s beside it (default 1; 0: never)")
    _arg(g, "--voice_change_guard_s", "voices.voice_change_guard_s", type=number,
         help="seconds each turn gives up beside a change of voice without a pause (multi_speaker; default 1)")
    _arg(g, "--speaker_link_similarity", "voices.speaker_link_similarity", type=number,
         help="a source's voice takes the id of a speaker of its channel, feed or folder this alike (default 0.83)")
    _arg(g, "--speaker_precision", "voices.speaker_precision", choices=list(PRECISIONS),
         help="the voice encoder's arithmetic: auto (the default) is bfloat16 on a CPU that computes it natively "
              "(AVX-512 BF16 or AMX; ≈ 2.4x faster, the same ids on real voices), float32 elsewhere; float32 "
              "everywhere for a cluster that mixes CPUs with and without it (docs/speakers.md)")

    g = p.add_argument_group("quality filter (after transcription; 'none' turns a rule off)")
    _arg(g, "--min_confidence", "quality.min_confidence", type=float_or_none,
         help="lowest ASR confidence kept, 0..1 (default 0.6; see docs/clean-clips.md for the formula)")
    _arg(g, "--min_chars_per_s", "quality.min_chars_per_s", type=float_or_none,
         help="slowest speaking rate kept, transcript characters per second (default 5)")
    _arg(g, "--max_chars_per_s", "quality.max_chars_per_s", type=float_or_none,
         help="fastest speaking rate kept, transcript characters per second (default 25)")
    _arg(g, "--min_words", "quality.min_words", type=int_or_none,
         help="fewest words in a clip's transcript: a one-word clip teaches a voice little (default none)")
    _arg(g, "--rate_outlier_iqr", "quality.rate_outlier_iqr", type=float_or_none,
         help="reject a clip whose speaking rate is outside Q1-k*IQR..Q3+k*IQR of its own source's "
              "clips (sources of 8 clips or more; default k=1.5)")
    _arg(g, "--sentence_end_only", "quality.sentence_end_only", action="store_true",
         help="keep only clips whose transcript ends a sentence (terminal punctuation; needs a model "
              "that writes punctuation, such as Whisper)")

    g = p.add_argument_group("Whisper gates (Whisper models only; 'none' turns a gate off; see docs/transcription.md)")
    _arg(g, "--max_no_speech_prob", "whisper_gates.max_no_speech_prob", type=float_or_none,
         help="highest probability of 'no speech' the model may give a clip (default 0.4)")
    _arg(g, "--min_avg_logprob", "whisper_gates.min_avg_logprob", type=float_or_none,
         help="lowest mean log-probability of the decoded tokens (default -0.8)")
    _arg(g, "--max_compression_ratio", "whisper_gates.max_compression_ratio", type=float_or_none,
         help="highest gzip compression ratio of the text: a loop compresses well (default 2.4)")
    _arg(g, "--max_ngram_repeats", "whisper_gates.max_ngram_repeats", type=int_or_none,
         help="most times a 1-4 word n-gram may be said back to back (default 4)")
    _arg(g, "--whisper_max_chars_per_s", "whisper_gates.max_chars_per_s", type=float_or_none,
         help="most transcript characters per second of audio (default 35)")

    g = p.add_argument_group("duplicates (across sources, runs and channels; see docs/dedup.md)")
    _arg(g, "--dedup_audio", "dedup.audio", convert=lambda v: v == "on", choices=["on", "off"],
         help="reject a clip whose audio repeats a clip kept before it, in this run or the corpus "
              "(Chromaprint fingerprints: re-uploads, mirrors, intros, ads; default on)")
    _arg(g, "--dedup_min_fraction", "dedup.min_fraction", type=number,
         help="share of a clip's length that must repeat other audio for it to be a duplicate (default 0.5)")
    _arg(g, "--dedup_max_ber", "dedup.max_ber", type=number,
         help="bit-error rate of a 1 s window under which two fingerprints are the same audio (default 0.2; "
              "re-encoded copies ≤ 0.07, unrelated speech ≈ 0.4-0.5)")
    _arg(g, "--dedup_text", "dedup.text", choices=["keep", "per_speaker", "drop"],
         help="a clip whose transcript repeats a kept clip's: keep it, drop it when the same speaker said it "
              "already (per_speaker, the default: the same text in another voice still teaches a voice), or drop it")
    _arg(g, "--dedup_text_threshold", "dedup.text_threshold", type=number,
         help="word-bigram Jaccard similarity from which two transcripts are the same text (default 0.7)")
    _arg(g, "--dedup_text_min_words", "dedup.text_min_words", type=int,
         help="shorter transcripts are never text duplicates (default 6)")
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
    if not beam_args:  # nothing to check: Beam's options (seconds to import) are left for the run
        return
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
    try:  # a write check where the output will be, creating nothing: a refused run leaves no folder behind
        fd, tmp = tempfile.mkstemp(prefix=".write-check-", dir=path if os.path.isdir(path) else probe_dir)
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
    from run.engine import runner_args, with_default_runner
    beam_args = runner_args(beam_args)
    check_beam_args(beam_args, parser)
    beam_args = with_default_runner(beam_args)
    try:
        return _settings(parser, args), beam_args
    except SettingError as e:
        raise OptionError(e.describe(lambda path: option_of(parser).get(path, path))) from None
    except OptionError:
        raise
    except ValueError as e:
        raise OptionError(str(e)) from None


def _output(value: str) -> str:
    output = value.rstrip("/") or value
    return os.path.abspath(fs.local_path(output)) if fs.is_local(output) else output


def _given(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Dict[str, Any]:
    """The options given, as nested field values: {"split": {"min_clip_s": 3.0}, "vad": "energy"}."""
    values: Dict[str, Any] = {}
    for action in parser._actions:
        if hasattr(action, "setting_paths") and hasattr(args, action.dest):
            value = action.convert(getattr(args, action.dest))
            for path in action.setting_paths:
                *parts, name = path.split(".")
                node = values
                for p in parts:
                    node = node.setdefault(p, {})
                node[name] = value
    return values


def _record(cls, values: Dict[str, Any]):
    """``cls`` built from nested field values; fields not given keep their defaults."""
    hints = typing.get_type_hints(cls)
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            value = values[f.name]
            if isinstance(value, dict) and dataclasses.is_dataclass(hints[f.name]):
                value = _record(hints[f.name], value)
            kw[f.name] = value
    return cls(**kw)


def _settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> CorpusSettings:
    """The options as ``CorpusSettings`` (which validates itself), with the defaults that depend on
    other values filled in; then the checks of this machine (model weights, folders)."""
    values = _given(parser, args)
    acquire, asr, gates = (values.setdefault(k, {}) for k in ("acquire", "asr", "gates"))
    acquire.setdefault("staging_dir", fs.join(values["output"], "_staging"))
    device = asr.get("device", AsrModelSpec.device)
    from audio import dnsmos
    try:
        values["dnsmos"] = dnsmos.resolve(values.get("dnsmos", "auto"), device)
    except dnsmos.DnsmosUnavailable as e:
        raise OptionError(f"--dnsmos on: {e}") from None
    gates.setdefault("min_dnsmos_ovrl", 2.5 if values["dnsmos"] else None)
    values.setdefault("asr_batch_seconds", 160.0 if device.startswith("cuda")
                      else values.get("split", {}).get("max_clip_s", SplitParams.max_clip_s))
    settings = _record(CorpusSettings, values)
    if settings.asr_accelerator is not None and (not settings.asr_accelerator.startswith("type:")
                                                 or any(c.isspace() for c in settings.asr_accelerator)):
        raise OptionError(f"--asr_accelerator {settings.asr_accelerator!r}: expected a Beam accelerator hint such "
                          "as 'type:nvidia-l4;count:1;install-nvidia-driver' (no spaces)")
    if settings.scratch_dir and not os.path.isdir(settings.scratch_dir):
        raise OptionError(f"--scratch_dir {settings.scratch_dir} is not a folder")
    if settings.speakers:
        from speakers.encoder import EncoderUnavailable, weights_path
        try:
            weights_path()
        except EncoderUnavailable as e:
            raise OptionError(f"--speakers on: {e}") from None
    return settings
