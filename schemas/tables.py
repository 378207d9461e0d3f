"""Parquet schemas of the corpus tables and the record → row conversions.

``manifest``: one row per kept sample; ``rejected``: one row per rejected segment or failed source;
``sources``: one row per source and run, the record that a source is done.
"""
from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

from schemas.records import (
    SCHEMA_VERSION,
    SCORE_FIELDS,
    ClipScores,
    Rejection,
    Source,
    SourceResult,
    SpeakerRecord,
    Transcript,
)
from schemas.redact import clean_text, safe

_DIGITS = re.compile(r"\d+")

MANIFEST = pa.schema([
    ("key", pa.string()),
    ("shard", pa.string()),
    ("source_id", pa.string()),
    ("source_uri", pa.string()),
    ("speaker", pa.string()),
    ("title", pa.string()),
    ("license", pa.string()),
    ("uploader", pa.string()),
    ("upload_date", pa.string()),
    ("original_url", pa.string()),
    ("extractor", pa.string()),
    ("item_id", pa.string()),
    ("start_s", pa.float64()),
    ("end_s", pa.float64()),
    ("duration_s", pa.float64()),
    ("text", pa.string()),
    ("confidence", pa.float64()),
    ("chars_per_s", pa.float64()),
    ("sentence_end", pa.bool_()),
    ("asr_model", pa.string()),
    ("sample_rate", pa.int32()),
    ("flac_bytes", pa.int64()),
    *[(name, pa.float64()) for name in SCORE_FIELDS],
    ("similar_keys", pa.list_(pa.string())),
    ("speaker_embedding", pa.list_(pa.float16())),
    ("fingerprint", pa.binary()),  # the clip's Chromaprint items (uint32 LE): the next run's dedup index
    ("schema_version", pa.int32()),
])

REJECTED = pa.schema([
    ("source_id", pa.string()),
    ("source_uri", pa.string()),
    ("key", pa.string()),
    ("stage", pa.string()),
    ("reason", pa.string()),
    ("detail", pa.string()),
    ("duration_s", pa.float64()),
    ("retryable", pa.bool_()),
    ("run", pa.string()),
    ("text", pa.string()),
    *[(name, pa.float64()) for name in SCORE_FIELDS],
    ("schema_version", pa.int32()),
])

# the manifest of rejected_shards/ (--keep_rejected_audio): a rejected row and the shard it is in
REJECTED_MANIFEST = pa.schema([("shard", pa.string())] + [f for f in REJECTED if f.name != "run"])

# a run's listed items (its plan, in the private work area): each Source as JSON
ITEMS = pa.schema([("source_id", pa.string()), ("order", pa.string()), ("item", pa.string())])

SPEAKERS = pa.schema([
    ("speaker_id", pa.string()),
    ("group", pa.string()),
    ("n_clips", pa.int64()),
    ("centroid", pa.list_(pa.float16())),
    ("run", pa.string()),
    ("schema_version", pa.int32()),
])

SOURCES = pa.schema([
    ("source_id", pa.string()),
    ("uri", pa.string()),
    ("speaker", pa.string()),
    ("title", pa.string()),
    ("license", pa.string()),
    ("origin", pa.string()),
    ("uploader", pa.string()),
    ("upload_date", pa.string()),
    ("original_url", pa.string()),
    ("extractor", pa.string()),
    ("item_id", pa.string()),
    ("status", pa.string()),
    ("reason", pa.string()),
    ("retryable", pa.bool_()),
    ("duration_s", pa.float64()),
    ("n_segments", pa.int64()),
    ("duplicate_of", pa.string()),  # the source id this source repeats (most of its clips' audio), if any
    ("duplicate_share", pa.float64()),  # the share of its clips' duration that repeats that source
    ("run", pa.string()),
    ("alias", pa.string()),
    ("schema_version", pa.int32()),
])


def source_metadata(src: Source) -> dict:
    """What a source says about itself, carried into every table row and sample of it."""
    return {
        "title": clean_text(src.title),
        "license": clean_text(src.license),
        "uploader": clean_text(src.uploader),
        "upload_date": clean_text(src.upload_date),
        "original_url": safe(src.webpage_url or src.uri),
        "extractor": clean_text(src.extractor),
        "item_id": clean_text(src.item_id),
    }


def manifest_row(t: Transcript, shard: str) -> dict:
    seg, src = t.segment, t.segment.source
    return {
        "key": seg.key,
        "shard": shard,
        "source_id": src.source_id,
        "source_uri": safe(src.uri),
        "speaker": clean_text(t.speaker_id),
        **source_metadata(src),
        "start_s": seg.start_s,
        "end_s": seg.end_s,
        "duration_s": round(seg.duration_s, 3),
        "text": clean_text(t.text),
        "confidence": t.confidence,
        "chars_per_s": round(t.chars_per_s, 3),
        "sentence_end": t.sentence_end,
        "asr_model": t.asr_model,
        "sample_rate": seg.sample_rate,
        "flac_bytes": seg.pack_length,
        **seg.scores.as_dict(),
        "similar_keys": list(t.similar_keys),
        "speaker_embedding": _halves(seg.embedding),
        "fingerprint": seg.fingerprint,
        "schema_version": SCHEMA_VERSION,
    }


def _halves(b):
    return None if b is None else np.frombuffer(b, dtype=np.float16)


def order_key(origin: str) -> str:
    """``origin`` in natural order as a plain string (digit runs zero-padded: ``s.txt:9`` < ``s.txt:10``),
    so a table of millions of items sorts in Arrow, not in Python."""
    return _DIGITS.sub(lambda m: m.group().zfill(12), origin or "")


def item_row(s: Source) -> dict:
    return {"source_id": s.source_id, "order": order_key(s.origin), "item": s.to_json()}


def item_from_row(row: dict) -> Source:
    return Source.from_json(row["item"])


def speaker_row(s: SpeakerRecord, run: str = "") -> dict:
    return {"speaker_id": s.speaker_id, "group": safe(s.group), "n_clips": s.n_clips, "centroid": _halves(s.centroid),
            "run": run, "schema_version": SCHEMA_VERSION}


def rejected_row(r: Rejection, run: str = "") -> dict:
    return {
        "source_id": r.source_id,
        "source_uri": safe(r.source_uri),
        "key": r.key,
        "stage": str(r.stage),
        "reason": r.reason,
        "detail": safe(r.detail),
        "duration_s": r.duration_s,
        "retryable": r.retryable,
        "run": run,
        "text": clean_text(r.text),
        **(r.segment.scores if r.segment is not None else ClipScores()).as_dict(),
        "schema_version": SCHEMA_VERSION,
    }


def source_row(s: SourceResult, run: str = "") -> dict:
    src = s.source
    return {
        "source_id": src.source_id,
        "uri": safe(src.uri),
        "speaker": clean_text(src.speaker_id),
        "origin": clean_text(src.origin),
        **source_metadata(src),
        "status": str(s.status),
        "reason": s.reason,
        "retryable": s.retryable,
        "duration_s": round(s.duration_s, 3),
        "n_segments": s.n_segments,
        "duplicate_of": s.duplicate_of or None,
        "duplicate_share": s.duplicate_share if s.duplicate_of else None,
        "run": run,
        "alias": src.alias,
        "schema_version": SCHEMA_VERSION,
    }


def sample_metadata(t: Transcript, shard: str) -> dict:
    """The ``{key}.json`` of a sample: the manifest row plus the source's extra metadata."""
    meta = manifest_row(t, shard)
    meta.pop("speaker_embedding")  # 256 numbers: kept in the manifest, not in every sample
    meta.pop("fingerprint")  # binary, for deduplication: kept in the manifest only
    meta["words"] = [{"word": w, "start_s": a, "end_s": b, "confidence": c} for w, a, b, c in t.words]
    if t.ctc_tokens is not None:
        meta["ctc_tokens"] = list(t.ctc_tokens)
        meta["ctc_frame_s"] = t.ctc_frame_s
    extra = {clean_text(k): safe(v) for k, v in t.segment.source.extra}
    if extra:
        meta["source_meta"] = extra
    return meta
