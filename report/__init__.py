"""``report.html``: a corpus at a glance, and clips to listen to.

``build_report`` reads the committed tables (``report.data``), draws the plots
(``report.figures``), copies the sampled clips' audio beside the page
(``report.audio``) and writes ``OUTPUT/report.html`` atomically (``report.page``).
It runs after every publish and from ``python -m pipelines.report OUTPUT``. Its cost grows with
the number of rows only through a few columnar aggregations: the page samples a fixed number of
clips, whatever the corpus's size, so it stays a few hundred KB.

    >>> from corpus.layout import Layout
    >>> from report import build_report
    >>> build_report(Layout("out"))  # doctest: +SKIP
    ReportResult(path='out/report.html', ...)
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np

from corpus import guard
from corpus.layout import REJECTED_SHARDS, Layout
from report import audio, data, figures, page
from report.data import ReportConfig
from schemas.outcomes import NO_CLIP_AUDIO, Status
from schemas.records import SCORE_FIELDS
from storage import fs

REPORT_NAME = "report.html"

# (column, title, axis label) of each distribution; scores are also drawn for rejected clips
DISTRIBUTIONS = [
    ("duration_s", "clip duration", "seconds"),
    ("confidence", "ASR confidence", "mean best-path probability"),
    ("chars_per_s", "speaking rate", "characters per second"),
    ("speech_ratio", "speech ratio (voice detector)", "share of frames with speech"),
    ("bandwidth_hz", "bandwidth", "Hz"),
    ("clipping", "clipping", "share of clipped samples"),
    ("snr_db", "signal to noise", "dB"),
    ("dnsmos_sig", "DNSMOS signal", "MOS"),
    ("dnsmos_bak", "DNSMOS background", "MOS"),
    ("dnsmos_ovrl", "DNSMOS overall", "MOS"),
]
DISTRIBUTIONS += [(name, name, name) for name in SCORE_FIELDS if name not in {c for c, _, _ in DISTRIBUTIONS}]


@dataclass(frozen=True)
class ReportResult:
    path: str
    n_bytes: int
    kept_clips: int
    audit_clips: int
    seconds: float


@dataclass(frozen=True)
class AuditClip:
    key: str
    reason: str  # "stage/reason" for a rejected clip, "" for a kept one
    detail: str
    title: str
    link: Optional[str]
    start_s: Optional[float]
    end_s: Optional[float]
    speaker: str
    words: list  # (word, confidence or None, marked as low)
    scores: list  # (name, formatted value)
    audio: Optional[str]
    audio_note: str


def _fmt(name: str, v) -> str:
    if name in ("bandwidth_hz",):
        return f"{v:.0f}"
    if name == "clipping":
        return f"{v:.4f}"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _scores(row: dict, names) -> list:
    return [(n, _fmt(n, row[n])) for n in names if row.get(n) is not None]


def _words(text: Optional[str], meta_words, low: float) -> list:
    """(word, confidence, low) of a transcript, at most ``data.MAX_TEXT`` characters of it."""
    out, shown = [], 0
    if meta_words:
        for w in meta_words:
            conf = w.get("confidence") if isinstance(w.get("confidence"), (int, float)) else None
            out.append((data.cap(w.get("word"), 100), conf, conf is not None and conf < low))
            shown += len(out[-1][0]) + 1
            if shown > data.MAX_TEXT:
                break
        return out
    return [(w, None, False) for w in data.cap(text, data.MAX_TEXT).split()]


def _start_from_key(key: str, source_id: str) -> Optional[float]:
    tail = key[len(source_id) + 1:] if key.startswith(source_id + "_") else ""
    return int(tail) / 1000 if tail.isdigit() else None


def no_audio_note(stage: str, reason: str, row: dict, runs: Dict[str, dict]) -> str:
    """Why a rejected clip has no audio to play; a flag is advised only where it would have kept it and the
    run that rejected the clip was built without it."""
    if (stage, reason) in NO_CLIP_AUDIO:
        return (f"{stage}/{reason} pieces are cut out before any clip's audio is written: their audio is never kept, "
                f"with or without --keep_rejected_audio")
    if ((runs.get(row.get("run") or "") or {}).get("settings") or {}).get("keep_rejected_audio"):
        return "the run that rejected this clip kept rejected clips' audio, but rejected_shards/ holds none of it"
    return "rejected clips' audio is kept only when the run that rejects them is built with --keep_rejected_audio"


def audit_clips(corpus: data.Corpus, cfg: ReportConfig, layout: Layout, log=lambda m: None):
    """The audit view's kept clips and rejected clips per reason, with their audio copied beside the page."""
    kept_rows = data.kept_sample(corpus.manifest, cfg)
    rejected_rows = data.rejected_sample(corpus.rejected, cfg)
    wanted = {r["key"]: audio.Wanted("shards", r["shard"], r["key"]) for r in kept_rows}
    rejected_wanted = {r["key"]: audio.Wanted(REJECTED_SHARDS, corpus.rejected_audio[r["key"]], r["key"])
                       for rows in rejected_rows.values() for r in rows if r["key"] in corpus.rejected_audio}
    got = audio.extract(layout, list(wanted.values()) + list(rejected_wanted.values()), log)
    sources = {r["source_id"]: r for r in corpus.sources}
    shown = ["duration_s", "confidence", "chars_per_s", *SCORE_FIELDS]
    kept = []
    for r in kept_rows:
        x = got[wanted[r["key"]]]
        kept.append(AuditClip(r["key"], "", "", data.cap(r.get("title") or r.get("source_uri") or r["source_id"]),
                              data.safe_link(r.get("original_url") or r.get("source_uri")), r["start_s"], r["end_s"],
                              data.cap(r.get("speaker")), _words(r["text"], x.meta.get("words"), cfg.low_word_confidence),
                              _scores(r, shown), x.path, x.note))
    rejected = []
    for (stage, reason), rows in rejected_rows.items():
        clips = []
        for r in rows:
            src = sources.get(r["source_id"], {})
            w = rejected_wanted.get(r["key"])
            x = got[w] if w is not None else audio.Extracted(None, {}, no_audio_note(stage, reason, r, corpus.runs))
            start = _start_from_key(r["key"], r["source_id"])
            clips.append(AuditClip(r["key"], data.cap(f"{stage}/{reason}"), data.cap(r.get("detail")),
                                   data.cap(src.get("title") or src.get("uri") or r["source_id"]),
                                   data.safe_link(src.get("original_url") or r.get("source_uri")), start,
                                   None if start is None else start + (r["duration_s"] or 0.0), "",
                                   _words(r.get("text"), None, cfg.low_word_confidence),
                                   _scores(r, ["duration_s", *SCORE_FIELDS]), x.path, x.note))
        rejected.append(((stage, reason), clips))
    return kept, rejected


def distributions(corpus: data.Corpus, cfg: ReportConfig) -> list:
    """(title, SVG data URI or None) for clip duration, confidence, speaking rate and every score."""
    clip_rows = [r for r in corpus.rejected if r["key"] is not None]
    out = []
    for name, title, label in DISTRIBUTIONS:
        series = [("kept", data.column(corpus.manifest, name), figures.KEPT)]
        if clip_rows and name in data.REJECTED_COLUMNS:
            series.append(("rejected", np.array([r[name] if r[name] is not None else np.nan for r in clip_rows],
                                                dtype=np.float64), figures.REJECTED))
        out.append((title, figures.histogram(series, title, label, cfg.bins)))
    return out


def page_context(corpus: data.Corpus, cfg: ReportConfig, layout: Layout, log=lambda m: None) -> dict:
    m = corpus.manifest
    kept_h = data.hours(data.column(m, "duration_s"))
    steps = data.funnel(corpus.sources, corpus.rejected, m.num_rows, kept_h)
    decoded = next(s.hours for s in steps if s.label == "decoded")
    lines = data.source_lines(corpus.sources, m, corpus.rejected)
    runs = data.run_lines(corpus.runs)
    speakers = data.clips_per_speaker(m)
    per_source = data.speakers_per_source(m)
    log(f"drawing {len(DISTRIBUTIONS) + 3} plots")
    plots = distributions(corpus, cfg)
    speaker_plots = [
        ("speakers per source", figures.count_histogram(per_source, "speakers per source", "speakers", "sources",
                                                        cfg.bins)),
        ("clips per speaker", figures.count_histogram(speakers, "clips per speaker", "clips", "speakers", cfg.bins)),
    ]
    kept, rejected = audit_clips(corpus, cfg, layout, log)
    statuses = {s.value: sum(1 for r in corpus.sources if r["status"] == s) for s in Status}
    total_elapsed = sum(r.elapsed_s for r in runs)
    total_in = sum(r.hours_in for r in runs)
    paddings = [r.asr_padding for r in runs if r.asr_padding is not None]
    published = sorted(r.get("published_at", "") for r in corpus.runs.values())
    return dict(
        root=corpus.root, seed=cfg.seed, low_word_confidence=cfg.low_word_confidence,
        runs_committed=len(corpus.runs), last_published=published[-1] if published else "",
        cards=[("sources", f"{len(corpus.sources):,}"),
               ("ok / failed / rejected", f"{statuses['ok']:,} / {statuses['failed']:,} / {statuses['rejected']:,}"),
               ("hours decoded", page._fmt_hours(decoded)), ("hours kept", page._fmt_hours(kept_h)),
               ("clips kept", f"{m.num_rows:,}"), ("speakers", f"{len(speakers):,}"),
               ("shards", f"{corpus.n_shards:,}")]
              + ([("clips ending a sentence", f"{ends:.0%}")] if (ends := data.sentence_end_share(m)) is not None else []),
        decoded_hours=decoded, funnel=steps, funnel_plot=figures.funnel_chart(steps),
        rejects=data.reject_groups(corpus.rejected), distributions=plots,
        n_speakers=len(speakers), n_kept_sources=len(per_source), speaker_plots=speaker_plots,
        sources=lines[:cfg.max_sources], sources_hidden=max(0, len(lines) - cfg.max_sources),
        runs=runs[:cfg.max_runs], runs_hidden=max(0, len(runs) - cfg.max_runs),
        total_hours_in=total_in, total_elapsed_s=total_elapsed,
        total_realtime=total_in * 3600 / total_elapsed if total_elapsed > 0 else None,
        mean_padding=float(np.mean(paddings)) if paddings else None,
        kept=kept, rejected=rejected,
    )


def build_report(layout: Layout, cfg: ReportConfig = ReportConfig(),
                 log: Callable[[str], None] = lambda m: None) -> ReportResult:
    """Write ``report.html`` (and the audit clips' audio in ``report_audio/``) for what ``layout`` holds."""
    started = time.monotonic()
    guard.check_no_links(layout.root)  # report_audio/ is pruned: never through a link
    log(f"reading the committed tables of {layout.root}")
    corpus = data.read_corpus(layout)
    context = page_context(corpus, cfg, layout, log)
    html = page.render(context).encode("utf-8")
    path = layout.path(REPORT_NAME)
    fs.atomic_write_bytes(path, html)
    on_page: List[str] = [c.audio.rsplit("/", 1)[-1] for c in context["kept"] if c.audio]
    on_page += [c.audio.rsplit("/", 1)[-1] for _, clips in context["rejected"] for c in clips if c.audio]
    audio.prune(layout, set(on_page))
    n_audit = len(context["kept"]) + sum(len(c) for _, c in context["rejected"])
    return ReportResult(path, len(html), corpus.manifest.num_rows, n_audit, time.monotonic() - started)
