"""Expand stage: sources → media items, fanned out across workers.

Expansion is its own step so that a channel with 2,000 videos is listed on one worker but
downloaded on many: items are shuffled (grouped by source id, which also drops duplicates that two
feeds or playlists share) before the acquire stage.

The set of done sources arrives as data (a file in the run's work area, read once per worker
process), not as a constant in the job graph. Per source, the items not done yet are taken in listing order up to
``--max_items_per_source``; every other pending item gets a ``deferred`` row and is picked up by a
later run, so a 10,000-episode feed is worked through 1,000 at a time and nothing is silently left
out. With ``--max_hours_total`` the taken items are then budgeted in sources-file order by their
stated durations, and the rest are deferred the same way.
"""
from __future__ import annotations

import re
from typing import Iterable, List, Optional, Tuple

import apache_beam as beam

from acquisition.config import AcquireConfig
from acquisition.expand import expand
from corpus.done_set import load_ids
from schemas.outcomes import Stage, Status
from schemas.records import Rejection, Source, SourceResult
from transforms.routing import OUTPUTS, REJECTED, SOURCES, route, with_outputs

STAGE = Stage.EXPAND


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


def deferred(item: Source, reason: str, detail: str):
    yield Rejection.for_source(item, STAGE, reason, detail)
    yield SourceResult.of(item, Status.DEFERRED, reason)


def is_done(item: Source, done) -> bool:
    return item.source_id in done or (item.alias is not None and item.alias in done)


def expand_records(source: Source, cfg: AcquireConfig, done, failed=frozenset()) -> Iterable:
    """Items to fetch (as ``(id, item)``), and rows for failures and deferred items.

    A folder, feed or playlist that ``failed`` in an earlier run and is listed now gets a ``listed``
    row, so that its old failure stops being its outcome."""
    items, listed = [], True
    for out in expand(source, cfg):
        if isinstance(out, Rejection):  # the source itself failed
            listed = False
            yield out
            yield SourceResult.of(source, Status.FAILED, out.reason)
        elif isinstance(out, tuple):  # an item refused before it could be fetched
            item, rejection = out
            if not is_done(item, done):
                yield rejection
                yield SourceResult.of(item, Status.FAILED, rejection.reason)
        else:
            items.append(out)
    if listed and source.source_id in failed and all(i.source_id != source.source_id for i in items):
        yield SourceResult.of(source, Status.LISTED, "listed")
    pending = [i for i in items if not is_done(i, done)]
    limit = cfg.max_items_per_source
    for item in pending[:limit]:
        yield item.source_id, item
    for item in pending[limit:]:
        yield from deferred(item, "over_items_limit",
                            f"--max_items_per_source {limit}: a run takes {limit} of the {len(pending)} "
                            f"items not done yet; the rest follow in later runs")


class _ExpandFn(beam.DoFn):
    def __init__(self, cfg: AcquireConfig, done_path: Optional[str], failed_path: Optional[str] = None):
        self.cfg, self.done_path, self.failed_path = cfg, done_path, failed_path

    def process(self, source: Source):
        done = load_ids(self.done_path) if self.done_path else frozenset()
        failed = load_ids(self.failed_path) if self.failed_path else frozenset()
        yield from route(expand_records(source, self.cfg, done, failed))


def _first(kv):
    """One item per source id (the earliest in sources-file order)."""
    _, items = kv
    return min(items, key=lambda s: (natural_key(s.origin), s.uri))


def _budget(items: List[Source], cfg: AcquireConfig):
    taken, rest = within_budget(items, cfg.max_hours_total, cfg.max_duration_s or 0.0)
    yield from route(taken)
    for s in rest:
        yield from route(deferred(s, "over_hours_budget", f"--max_hours_total {cfg.max_hours_total:g} h is used up"))


class Expand(beam.PTransform):
    """Source → item Source (main), Rejection (``rejected``), SourceResult (``sources``).

    ``done_path`` is a text file of source ids already finished (one per line), or None;
    ``failed_path`` one of the sources whose latest row is a failure.
    """

    def __init__(self, cfg: AcquireConfig, done_path: Optional[str] = None, failed_path: Optional[str] = None):
        super().__init__()
        self.cfg, self.done_path, self.failed_path = cfg, done_path, failed_path

    def expand(self, sources):
        listed = sources | "List" >> with_outputs(beam.ParDo(_ExpandFn(self.cfg, self.done_path, self.failed_path)),
                                                  main="items")
        items = (listed["items"]
                 | "ById" >> beam.GroupByKey()
                 | "Dedupe" >> beam.Map(_first))
        if self.cfg.max_hours_total is None:
            return {"items": items, REJECTED: listed[REJECTED], SOURCES: listed[SOURCES]}
        budgeted = (items
                    | "One" >> beam.Map(lambda item: ("", item))
                    | "AllItems" >> beam.GroupByKey()
                    | "Budget" >> with_outputs(beam.FlatMap(lambda kv, cfg: _budget(list(kv[1]), cfg), self.cfg),
                                               main="items"))
        spread = budgeted["items"] | "Spread" >> beam.Reshuffle()
        return {"items": spread,
                **{tag: (listed[tag], budgeted[tag]) | f"All{tag.title()}" >> beam.Flatten() for tag in OUTPUTS}}
