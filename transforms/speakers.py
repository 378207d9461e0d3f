"""Speakers stage: give every kept clip a speaker id and conditioning candidates (``similar_keys``).

Clips are grouped by voice group (``Source.voice_group``: a channel, feed or uploader; or the
speaker the sources file names), which is the only shuffle here and carries no audio — a clip's
voice embedding is 512 bytes. Each group is clustered (``speakers.cluster``) with the speakers
the corpus already knows in it, read from ``speakers/`` by the driver and handed to the workers
as a lookup file (``corpus.done_set``). Emits the transcripts with their speaker and similar keys (main) and the group's
speakers after this run (``speakers``), which the run publishes to ``speakers/run-{tag}.parquet``.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from typing import Iterable, List, Optional

import apache_beam as beam
import numpy as np

from corpus.done_set import load_json_lines
from schemas.records import SpeakerRecord, Transcript
from speakers import cluster
from speakers.turns import embedding_bytes, embedding_of
from transforms.routing import MAIN, Split

SPEAKERS = "speakers"


def group_of(t: Transcript) -> str:
    src = t.segment.source
    return f"given:{src.speaker}" if src.speaker else src.voice_group


def _embeddings(items: List[Transcript]) -> np.ndarray:
    rows = [embedding_of(t.segment.embedding) for t in items]
    return np.stack([r if r is not None else np.full(256, np.nan, np.float32) for r in rows]) \
        if rows else np.zeros((0, 256), np.float32)


def known_from_json(lines: Iterable[str]) -> List[cluster.KnownSpeaker]:
    out = []
    for line in lines:
        d = json.loads(line) if isinstance(line, str) else line
        out.append(cluster.KnownSpeaker(d["speaker_id"], np.asarray(d["centroid"], np.float32), int(d["n_clips"])))
    return sorted(out, key=lambda k: k.speaker_id)


def assign_group(group: str, transcripts: Iterable[Transcript], known: Iterable, params: cluster.ClusterParams):
    """The group's transcripts with speaker ids and similar keys, then its speakers (tagged)."""
    items = sorted(transcripts, key=lambda t: t.key)
    emb = _embeddings(items)
    keys = [t.key for t in items]
    if group.startswith("given:"):
        ids = [group[len("given:"):]] * len(items)
        have = ~np.isnan(emb).any(axis=1)
        old = known_from_json(known)
        vecs = [k.centroid * k.n_clips for k in old] + list(emb[have])
        count = sum(k.n_clips for k in old) + int(have.sum())
        speakers = [cluster.KnownSpeaker(ids[0], cluster.normalise(np.sum(vecs, axis=0)), count)] if vecs else []
    else:
        ids, speakers = cluster.assign(group, keys, [t.segment.source.source_id for t in items], emb,
                                       known_from_json(known), params,
                                       [cluster.listing_order(t.segment.source.origin) for t in items],
                                       [t.segment.duration_s for t in items],
                                       [t.segment.source_voice for t in items])
    similar = cluster.similar_keys(keys, ids, emb, params.similar_k, params.block)
    for t, sid, sim in zip(items, ids, similar):
        yield MAIN, dataclasses.replace(t, speaker=sid, similar_keys=sim)
    for s in speakers:
        yield SPEAKERS, SpeakerRecord(s.speaker_id, group, embedding_bytes(s.centroid), s.n_clips)


@functools.lru_cache(maxsize=4)
def known_by_group(path: str) -> dict:
    """The known speakers by voice group, built once per process (every group's call looks it up)."""
    out = {}
    for d in load_json_lines(path):
        out.setdefault(d["group"], []).append(d)
    return out


class _AssignFn(beam.DoFn):
    def __init__(self, params: cluster.ClusterParams, known_path: Optional[str]):
        self.params, self.known_path = params, known_path

    def process(self, kv):
        group, items = kv
        known = known_by_group(self.known_path).get(group, []) if self.known_path else []  # empty for a new group
        yield from assign_group(group, items, known, self.params)


class AssignSpeakers(beam.PTransform):
    """kept Transcript → Transcript with ``speaker`` and ``similar_keys`` (main), SpeakerRecord (``speakers``).

    ``known_path`` is a lookup file of the speakers the corpus knows (JSON lines with their ``group``).
    """

    def __init__(self, params: cluster.ClusterParams, known_path: Optional[str] = None):
        super().__init__()
        self.params, self.known_path = params, known_path

    def expand(self, kept):
        return (kept
                | "ByVoiceGroup" >> beam.Map(lambda t: (group_of(t), t))
                | "GroupByVoiceGroup" >> beam.GroupByKey()
                | "Cluster" >> beam.ParDo(_AssignFn(self.params, self.known_path))
                | "Outputs" >> Split("kept", (SPEAKERS,)))


def less_unkept(kv) -> Iterable[SpeakerRecord]:
    """A speaker's record counting only the clips kept: its clips rejected later (as duplicates) are
    taken off; a speaker new in this run with none left is no speaker of the corpus."""
    _, joined = kv
    gone = len(list(joined["unkept"]))
    for s in joined["speaker"]:
        if s.n_clips - gone > 0:
            yield dataclasses.replace(s, n_clips=s.n_clips - gone)


class CountKept(beam.PTransform):
    """SpeakerRecord → SpeakerRecord whose ``n_clips`` leaves out ``unkept`` (speaker ids, one per clip)."""

    def __init__(self, unkept):
        super().__init__()
        self.unkept = unkept

    def expand(self, speakers):
        return ({"speaker": speakers | "BySpeaker" >> beam.Map(lambda s: (s.speaker_id, s)),
                 "unkept": self.unkept | "ById" >> beam.Map(lambda sid: (sid, None))}
                | "JoinUnkept" >> beam.CoGroupByKey()
                | "Recount" >> beam.FlatMap(less_unkept))
