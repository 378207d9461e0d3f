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
from typing import Iterable, List, Optional, Tuple

import apache_beam as beam

from corpus.done_set import read_table_lookup
from dedup import fingerprint
from dedup.decide import DedupParams, Item, decide, published_audio_index, source_repeats
from schemas.outcomes import Stage
from schemas.records import Rejection, Segment, SourceResult, Transcript
from speakers.turns import embedding_of
from transforms.routing import MAIN, OUTPUTS, REJECTED, Split, route

PUBLISHED_COLUMNS = ["key", "speaker", "text", "fingerprint"]
REPEATS = "repeats"  # (source id, SourceRepeat) of the sources that repeat another
UNKEPT = "unkept"  # the speaker id of each rejected clip that its speaker's clip count held


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


def verdicts(pairs: List[Tuple[Item, Tuple[str, ...]]], params: DedupParams, published_path: Optional[str]):
    """By key (main): the verdicts, and for kept clips whose similar keys name a rejected clip, the
    similar keys left; then the sources that repeat another (``REPEATS``)."""
    items = [it for it, _ in pairs]
    published, index = load_published(published_path, params) if published_path else ([], None)
    found = decide(items, published, params, index)
    for kv in sorted(found.items()):
        yield MAIN, kv
    for it, similar in sorted(pairs, key=lambda p: p[0].key):
        if it.key not in found and any(k in found for k in similar):
            yield MAIN, (it.key, tuple(k for k in similar if k not in found))
    for kv in sorted(source_repeats(items, found).items()):
        yield REPEATS, kv


def apply(kv, params: DedupParams):
    _, joined = kv
    verdict = next(iter(joined["verdict"]), None)
    for t in joined["clip"]:
        if isinstance(verdict, tuple):  # kept; a clip it named as similar is not
            yield from route([dataclasses.replace(t, similar_keys=verdict)])
        elif verdict is None:
            yield from route([t])
        else:
            yield from route([Rejection.for_segment(t.segment, Stage.DEDUP, verdict.reason, verdict.detail,
                                                    text=t.text)])
            if t.speaker is not None and embedding_of(t.segment.embedding) is not None:
                yield UNKEPT, t.speaker


def mark_repeat(kv) -> Iterable[SourceResult]:
    """A source's result, naming the source it repeats when it does (``SourceResult.duplicate_of``)."""
    _, joined = kv
    repeat = next(iter(joined["repeat"]), None)
    for r in joined["result"]:
        yield r if repeat is None else dataclasses.replace(r, duplicate_of=repeat.repeats,
                                                           duplicate_share=repeat.share)


class MarkRepeats(beam.PTransform):
    """SourceResult → SourceResult with ``duplicate_of``, given the ``REPEATS`` output of ``Dedup``."""

    def __init__(self, repeats):
        super().__init__()
        self.repeats = repeats

    def expand(self, results):
        return ({"result": results | "BySource" >> beam.Map(lambda r: (r.source.source_id, r)), "repeat": self.repeats}
                | "JoinRepeats" >> beam.CoGroupByKey()
                | "Mark" >> beam.FlatMap(mark_repeat))


class Dedup(beam.PTransform):
    """kept Transcript → kept Transcript (``kept``), Rejection ``duplicate_audio``/``duplicate_text`` (``rejected``),
    the sources that repeat another (``REPEATS``) and the speakers of rejected clips (``UNKEPT``).

    ``published_path`` is a lookup file of the corpus's clips (``PUBLISHED_COLUMNS``), or None.
    """

    def __init__(self, params: DedupParams, published_path: Optional[str] = None):
        super().__init__()
        self.params, self.published_path = params, published_path

    def expand(self, kept):
        params, path = self.params, self.published_path
        keyed = kept | "ByKey" >> beam.Map(lambda t: (t.key, t))
        judged = (kept
                  | "Items" >> beam.Map(lambda t: ("", (item_of(t), tuple(t.similar_keys or ()))))
                  | "AllItems" >> beam.GroupByKey()
                  | "Decide" >> beam.FlatMap(lambda kv: verdicts(list(kv[1]), params, path))
                  | "Judged" >> Split("verdict", (REPEATS,)))
        out = ({"clip": keyed, "verdict": judged["verdict"]}
               | "Join" >> beam.CoGroupByKey()
               | "Apply" >> beam.FlatMap(apply, params)
               | "Outputs" >> Split("kept", OUTPUTS + (UNKEPT,)))
        return {"kept": out["kept"], REJECTED: out[REJECTED], REPEATS: judged[REPEATS], UNKEPT: out[UNKEPT]}
