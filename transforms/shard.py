"""Shard stage: pack kept samples into WebDataset shards in global key order.

Only small records cross the extra shuffles here: a count per source (one small list, gathered on
one key) fixes each source's first sample index, which is joined to the source's transcripts
(``CoGroupByKey``, no side input), and each sample's shard is ``first_index + position //
samples_per_shard``. Sorting by source id and key makes the assignment,
and so every shard's bytes, the same on every rerun of the same input.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Tuple

import apache_beam as beam

from corpus.shards import ShardInfo, shard_name, write_rejected_shard, write_shard
from schemas.records import Rejection, Transcript
from transforms.progress import progress


@dataclass(frozen=True)
class ShardConfig:
    shards_dir: str
    manifest_dir: str
    prefix: str = "shard"
    samples_per_shard: int = 1000
    first_index: int = 0
    rejected: bool = False  # write rejected clips (Rejection records with audio) instead of kept samples


def source_offsets(counts: Iterable[Tuple[str, int]]) -> Dict[str, int]:
    """Index of each source's first sample when sources are laid out in id order."""
    offsets, total = {}, 0
    for sid, n in sorted(counts):
        offsets[sid] = total
        total += n
    return offsets


def source_of(item) -> str:
    return item.source_id if isinstance(item, Rejection) else item.segment.source.source_id


def assign_shards(transcripts: Iterable[Transcript], base: int, cfg: ShardConfig) -> List[Tuple[int, Transcript]]:
    """(shard index, transcript) for one source's transcripts, the source's first sample being ``base``."""
    items = sorted(transcripts, key=lambda t: t.key)
    return [(cfg.first_index + (base + i) // cfg.samples_per_shard, t) for i, t in enumerate(items)]


def _write(index_and_items, cfg: ShardConfig) -> ShardInfo:
    index, items = index_and_items[0], list(index_and_items[1])
    write = write_rejected_shard if cfg.rejected else write_shard
    info = write(cfg.shards_dir, cfg.manifest_dir, shard_name(cfg.prefix, index), items)
    if not cfg.rejected:  # kept: what the corpus gets, after every stage that may still reject a clip
        progress().add(shards=1, kept=len(items))
    return info


class WriteShards(beam.PTransform):
    """kept Transcript (or, with ``rejected``, a Rejection with its clip) → ShardInfo, one per shard."""

    def __init__(self, cfg: ShardConfig):
        super().__init__()
        self.cfg = cfg

    def expand(self, kept):
        cfg = self.cfg
        keyed = kept | "BySource" >> beam.Map(lambda t: (source_of(t), t))
        offsets = (keyed
                   | "One" >> beam.Map(lambda kv: (kv[0], 1))
                   | "Count" >> beam.CombinePerKey(sum)
                   | "Gather" >> beam.Map(lambda kv: ("", kv))
                   | "AllCounts" >> beam.GroupByKey()
                   | "Offsets" >> beam.FlatMap(lambda kv: sorted(source_offsets(kv[1]).items())))
        return ({"items": keyed, "offset": offsets}
                | "Join" >> beam.CoGroupByKey()
                | "Assign" >> beam.FlatMap(lambda kv: assign_shards(kv[1]["items"], list(kv[1]["offset"])[0], cfg))
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteTar" >> beam.Map(_write, cfg))
