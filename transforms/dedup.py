"""Dedup stage: reject kept clips that repeat the audio or the transcript of a clip kept before them.

Each clip's fingerprint was cut from its source's in the segment stage (``attach_fingerprints``);
here only small records cross the shuffle: every clip's key, order, speaker, text and fingerprint
(≈ 32 bytes per second) are gathered on one key and judged in one deterministic pass
(``dedup.decide``) against the published corpus's index — a lookup file the driver writes from
the committed manifests (``corpus.done_set``), read once per worker process — and the verdicts are
joined back to the transcripts by key.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import List, Optional, Tuple

import apache_beam as beam

from corpus.done_set import read_table_lookup
from dedup import fingerprint
from dedup.decide import DedupParams, Item, decide, published_audio_index
from schemas.outcomes import Stage
from schemas.records import Rejection, Segment, Transcript
from transforms.routing import Split, route

PUBLISHED_COLUMNS = ["key", "speaker", "text", "fingerprint"]


def attach_fingerprints(segments: List[Segment], decoded) -> List[Segment]:
    """``segments`` with their fingerprints, cut from one fingerprint of the decoded source."""
    if not segments:
        return segments
    fp = fingerprint.of_reader(decoded.read, decoded.n_samples, decoded.sample_rate)
    return [dataclasses.replace(s, fingerprint=fingerprint.to_bytes(fingerprint.clip_slice(fp, s.start_s, s.end_s)))
            for s in segments]


def item_of(t: Transcript) -> Item:
    """A run's clip in dedup order: the earliest upload first (undated last), then by URI and time."""
    seg, src = t.segment, t.segment.source
    fp = fingerprint.from_bytes(seg.fingerprint) if seg.fingerprint else None
    return Item(t.key, (1, src.upload_date or "9999", src.uri, seg.start_s), seg.duration_s, t.speaker_id, t.text, fp)


def published_items(rows: List[dict]) -> List[Item]:
    return [Item(r["key"], (0, r["key"]), 0.0, r.get("speaker"), r.get("text") or "",
                 fingerprint.from_bytes(r["fingerprint"]) if r.get("fingerprint") else None) for r in rows]


@functools.lru_cache(maxsize=2)
def load_published(path: str, params: DedupParams):
    """(the published clips, their audio index), built once per process."""
    items = published_items(read_table_lookup(path).to_pylist())
    return items, published_audio_index(items, params)


def verdicts(items: List[Item], params: DedupParams, published_path: Optional[str]) -> List[Tuple[str, object]]:
    published, index = load_published(published_path, params) if published_path else ([], None)
    return sorted(decide(items, published, params, index).items())


def apply(kv, params: DedupParams):
    _, joined = kv
    verdict = next(iter(joined["verdict"]), None)
    for t in joined["clip"]:
        if verdict is None:
            yield t
        else:
            yield Rejection.for_segment(t.segment, Stage.DEDUP, verdict.reason, verdict.detail, text=t.text)


class Dedup(beam.PTransform):
    """kept Transcript → kept Transcript (``kept``), Rejection ``duplicate_audio``/``duplicate_text`` (``rejected``).

    ``published_path`` is a lookup file of the corpus's clips (``PUBLISHED_COLUMNS``), or None.
    """

    def __init__(self, params: DedupParams, published_path: Optional[str] = None):
        super().__init__()
        self.params, self.published_path = params, published_path

    def expand(self, kept):
        params, path = self.params, self.published_path
        keyed = kept | "ByKey" >> beam.Map(lambda t: (t.key, t))
        judged = (kept
                  | "Items" >> beam.Map(lambda t: ("", item_of(t)))
                  | "AllItems" >> beam.GroupByKey()
                  | "Decide" >> beam.FlatMap(lambda kv: verdicts(list(kv[1]), params, path)))
        return ({"clip": keyed, "verdict": judged}
                | "Join" >> beam.CoGroupByKey()
                | "Apply" >> beam.FlatMap(lambda kv: route(apply(kv, params)))
                | "Outputs" >> Split("kept"))
