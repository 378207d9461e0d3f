"""What a command prints: the user's lines on stderr, library and Beam harness chatter only with --verbose.

Beam's worker processes (``--direct_running_mode=multi_processing``) write their own log lines to the
stderr they inherit, and Hugging Face prints progress bars while loading a model. ``quiet_libraries``
turns down what this process logs; ``FilteredStderr`` also catches what child processes write, at
the file-descriptor level: lines that start with one of our prefixes pass, the rest is kept (the
last ``keep`` lines) so that a failure can still show it.

``logger(prefix)`` is the one way a command prints its own lines (``[prefix] message`` on stderr,
above the live progress bar while one is drawn); ``log`` is the build's. It lives here, in run/,
because printing is a command's business: the commands (pipelines/, tts/ training) import it, and
the rooms below run/ (corpus/, report/, transforms/ ...) never print but take a ``log`` callable
from their caller, so imports still go downward only.
"""
from __future__ import annotations

import collections
import logging
import os
import sys
import threading
from typing import Callable, Deque, Optional, Sequence

from run import live_progress
from schemas.redact import safe

OUR_PREFIXES = ("[speechmill", "[train", "[compact", "[report", "[demo", "[setup")
NOISE = ("apitools not found", "Resource module is not available", "Discarding unparseable args",
         "Converting string literal type hint")  # Beam, at INFO, once per annotated transform


class DropKnownNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(n in msg for n in NOISE)


def quiet_libraries(verbose: bool = False) -> None:
    """Hide INFO chatter and progress bars of Beam, Hugging Face and friends (all of it with ``verbose``)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # transformers reads the variables above as it is imported; one imported already is told here
    # (importing it just for this would cost a second before a command could answer)
    hf_logging = sys.modules.get("transformers.utils.logging")
    if hf_logging is not None:
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    root = logging.getLogger()
    if verbose and not root.handlers:  # every library's INFO lines, each with the logger that wrote it
        logging.basicConfig(level=logging.INFO, format="%(levelname)s:%(name)s:%(message)s")
    drop = DropKnownNoise()
    root.addFilter(drop)
    for h in root.handlers:
        h.addFilter(drop)
    if verbose:
        return
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # read by dask worker processes as they start
    for name in ("apache_beam", "urllib3", "botocore", "boto3", "s3transfer", "filelock", "fsspec", "distributed"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)
    logging.getLogger("apache_beam.runners.worker").setLevel(logging.ERROR)


def beam_quiet_args(beam_args: Sequence[str], verbose: bool = False) -> list:
    """Beam options that keep worker processes' logging at WARNING, unless the user chose a level."""
    args = list(beam_args)
    if verbose or any(a.startswith("--default_sdk_harness_log_level") for a in args):
        return args
    return args + ["--default_sdk_harness_log_level=WARNING"]


_ACTIVE: Optional["FilteredStderr"] = None


def visible_stream():
    """Where a user sees our output: the real stderr, also while ``FilteredStderr`` filters fd 2."""
    active = _ACTIVE
    return active._out if active is not None and active._out is not None else sys.stderr


def filtering() -> bool:
    """Whether every line written to fd 2 (ours, the libraries', the workers') passes one writer, which
    knows of a live bar: only then may a bar be drawn, as nothing else can be glued to it."""
    active = _ACTIVE
    return active is not None and active._out is not None


class FilteredStderr:
    """Route fd 2 (ours and our children's) through a filter thread while the block runs.

    Lines that start with one of ``prefixes`` (and lines right after them that are indented: a
    summary's body) reach the real stderr; other lines are kept in ``self.hidden`` (the last
    ``keep``), shown by ``dump_hidden`` when something failed. With ``passthrough`` nothing is
    filtered.
    """

    def __init__(self, prefixes: Sequence[str] = OUR_PREFIXES, keep: int = 200, passthrough: bool = False):
        self.prefixes, self.passthrough = tuple(prefixes), passthrough
        self.hidden: Deque[str] = collections.deque(maxlen=keep)
        self._saved: Optional[int] = None
        self._thread: Optional[threading.Thread] = None
        self._out = None

    def __enter__(self) -> "FilteredStderr":
        global _ACTIVE
        _ACTIVE = self
        if self.passthrough:
            return self
        sys.stderr.flush()
        self._saved = os.dup(2)
        r, w = os.pipe()
        os.dup2(w, 2)
        os.close(w)
        self._out = os.fdopen(os.dup(self._saved), "w", buffering=1, errors="replace")
        self._thread = threading.Thread(target=self._pump, args=(r,), daemon=True, name="stderr-filter")
        self._thread.start()
        return self

    def _pump(self, fd: int) -> None:
        shown = False
        with os.fdopen(fd, "r", errors="replace", newline="") as pipe:
            for raw in pipe:
                line = raw.rstrip("\n")
                # progress bars and \r-updated lines: keep only the last state
                line = line.rsplit("\r", 1)[-1]
                if line.startswith(self.prefixes):
                    shown = True
                elif not (shown and line.startswith(("  ", "\t")) and line.strip()):
                    shown = False
                if shown:
                    live_progress.write_line(self._out, line)
                else:
                    self.hidden.append(line)

    def write_visible(self, text: str) -> None:
        """Write straight to the real stderr (not through the filter)."""
        live_progress.write_line(self._out or sys.stderr, text)

    def dump_hidden(self, n: int = 40) -> None:
        lines = [l for l in self.hidden if l.strip()][-n:]
        if lines:
            self.write_visible("[speechmill] last lines logged by the libraries (--verbose shows all):\n"
                               + "\n".join("    " + l for l in lines))

    def __exit__(self, *exc) -> None:
        global _ACTIVE
        _ACTIVE = None
        if self.passthrough or self._saved is None:
            return
        sys.stderr.flush()
        os.dup2(self._saved, 2)  # closes the pipe's write end held by fd 2: the pump sees EOF
        os.close(self._saved)
        self._saved = None
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._out is not None:
            self._out.flush()
            self._out.close()
            self._out = None


def logger(prefix: str) -> Callable[[str], None]:
    """A ``log(msg)`` that prints ``[prefix] msg`` on stderr, above the live progress bar while one is drawn."""
    def log(msg: str) -> None:
        line = f"[{prefix}] {msg}"
        bar = live_progress.ACTIVE
        if bar is not None:
            bar.print_above(line)
        else:
            print(line, file=sys.stderr, flush=True)
    return log


log = logger("speechmill")


def short_uri(uri, width: int = 90) -> str:
    """A URI cut to ``width`` characters in its middle: the file name at its end is what a reader looks for."""
    text = safe(uri or "")
    if len(text) <= width:
        return text
    keep = width - 1
    return text[: keep // 2] + "…" + text[len(text) - (keep - keep // 2):]


def print_summary(title: str, report: dict, output: Optional[str] = None) -> None:
    s = report["sources"]
    lines = [
        f"{title}: sources {s['total']} ({s['ok']} ok, {s['failed']} failed, {s['rejected']} rejected"
        + (f", {s['deferred']} deferred to the next run" if s.get("deferred") else "") + ")",
        f"  hours in {report['hours_in']:.3f}, hours kept {report['hours_kept']:.3f} "
        f"({report['kept']} samples in {report['shards']} shards)",
        f"  segments {report['segments']}, rejected segments {report['rejected_segments']}",
    ]
    if report.get("sentence_end_share") is not None:
        lines.append(f"  kept clips that end a sentence: {report['sentence_end_share']:.1%}")
    if report.get("asr_hours_saved"):
        lines.append(f"  audio gates removed {report['asr_hours_saved']:.3f} h before transcription")
    if report.get("asr_padding_fraction") is not None:
        lines.append(f"  ASR input that was padding: {report['asr_padding_fraction']:.1%}")
    if report["rejects_by_reason"]:
        lines.append("  rejects by reason:")
        for reason, r in report["rejects_by_reason"].items():
            lines.append(f"    {reason:32s} {r['count']:6d}  ({r['hours']:.3f} h)")
    repeats = report.get("duplicate_sources") or {}
    if repeats.get("count"):
        lines.append(f"  sources that repeat another source: {repeats['count']}")
        for e in repeats["examples"]:
            lines.append(f"    {short_uri(e['uri'])} repeats {short_uri(e['repeats_uri'] or e['repeats'])}"
                         f" ({e['share']:.0%} of its clips' audio)")
    examples = report.get("failed_examples") or []
    if examples:
        n_bad = s["failed"] + s["rejected"]
        lines.append(f"  failed or rejected sources ({len(examples)} of {n_bad}"
                     + (f"; all in {output}/sources/*.parquet and rejected/*.parquet" if output else "") + "):")
        for e in examples:
            lines.append(f"    {e['origin'] or '?'}: {short_uri(e['uri'])} — {e['status']}, {e['reason']}")
            if e.get("detail"):
                lines.append(f"      {safe(e['detail'])[:200]}")
    if report.get("retried_next_run"):
        lines.append(f"  {report['retried_next_run']} of them failed for reasons that are tried again on the next run")
    log("\n".join(lines))
