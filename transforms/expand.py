"""Expand stage: sources → media items, fanned out across workers.

Expansion is its own step so that a channel with 2,000 videos is listed on one worker but
downloaded on many: items are shuffled (grouped by source id, which also drops duplicates that two
feeds or playlists share) before the acquire stage. Items already done in earlier runs are dropped
here; with ``--max_hours_total`` the remaining items are taken in sources-file order until their
stated durations fill the budget, and the rest are deferred to a later run.
"""
from __future__ import annotations

import re
from typing import Iterable, List, Optional, Tuple

import apache_beam as beam

from acquisition.expand import expand
from acquisition.fetch import AcquireConfig
from corpus.progress import progress
from schemas.records import Rejection, Source, SourceResult

FAILED = "failed"
SOURCES = "sources"
STAGE = "expand"


def natural_key(origin: str) -> Tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", origin))


def within_budget(items: Iterable[Source], max_hours: Optional[float],
                  unknown_s: float) -> Tuple[List[Source], List[Source]]:
    """(taken, deferred): items in sources-file order while their stated hours fit the budget."""
    ordered = sorted(items, key=lambda s: (natural_key(s.origin), s.source_id))
    if max_hours is None:
        return ordered, []
    taken, deferred, used = [], [], 0.0
    for s in ordered:
        need = s.declared_duration_s or unknown_s
        if used + need <= max_hours * 3600 or not taken:
            taken.append(s)
            used += need
        else:
            deferred.append(s)
    return taken, deferred


class _ExpandFn(beam.DoFn):
    def __init__(self, cfg: AcquireConfig, done: frozenset):
        self.cfg, self.done = cfg, done

    def process(self, source: Source):
        for out in expand(source, self.cfg):
            if isinstance(out, Rejection):
                progress().add(sources_failed=1)
                yield beam.pvalue.TaggedOutput(FAILED, out)
                yield beam.pvalue.TaggedOutput(SOURCES, SourceResult(
                    source, "failed", reason=out.reason, retryable=out.retryable))
            elif out.source_id not in self.done:
                yield out.source_id, out


def _first(kv):
    """One item per source id (the earliest in sources-file order)."""
    _, items = kv
    return min(items, key=lambda s: (natural_key(s.origin), s.uri))


def _budget(items: List[Source], cfg: AcquireConfig):
    taken, deferred = within_budget(items, cfg.max_hours_total, cfg.max_duration_s or 0.0)
    for s in taken:
        yield s
    for s in deferred:
        yield beam.pvalue.TaggedOutput(FAILED, Rejection.for_source(
            s, STAGE, "over_hours_budget", f"--max_hours_total {cfg.max_hours_total:g} h is used up",
            retryable=True))
        yield beam.pvalue.TaggedOutput(SOURCES, SourceResult(s, "deferred", reason="over_hours_budget",
                                                             retryable=True))


class Expand(beam.PTransform):
    """Source → item Source (main), Rejection (``failed``), SourceResult (``sources``)."""

    def __init__(self, cfg: AcquireConfig, done: Iterable[str] = ()):
        super().__init__()
        self.cfg, self.done = cfg.validate(), frozenset(done)

    def expand(self, sources):
        listed = sources | "List" >> beam.ParDo(_ExpandFn(self.cfg, self.done)).with_outputs(
            FAILED, SOURCES, main="items")
        items = (listed.items
                 | "ById" >> beam.GroupByKey()
                 | "Dedupe" >> beam.Map(_first))
        if self.cfg.max_hours_total is None:
            return {"items": items, FAILED: listed[FAILED], SOURCES: listed[SOURCES]}
        budgeted = (items
                    | "AllItems" >> beam.combiners.ToList()
                    | "Budget" >> beam.FlatMap(_budget, self.cfg).with_outputs(FAILED, SOURCES, main="items"))
        spread = budgeted.items | "Spread" >> beam.Reshuffle()
        return {"items": spread,
                FAILED: (listed[FAILED], budgeted[FAILED]) | "AllFailed" >> beam.Flatten(),
                SOURCES: (listed[SOURCES], budgeted[SOURCES]) | "AllResults" >> beam.Flatten()}
