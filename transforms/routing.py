"""One convention for every stage's outputs, and the one helper that routes and counts them.

A stage's DoFn yields its main records, ``Rejection``s and ``SourceResult``s; ``route`` marks the
last two for the ``rejected`` and ``sources`` outputs and keeps the progress counters, so every
transform reads alike and no stage invents its own tags.

Outputs are split by plain filters over one PCollection of ``(tag, record)`` pairs rather than by
Beam's multi-output ParDo: every runner executes single-output ParDos the same way (the Dask runner,
for one, does not keep a ParDo's tagged outputs apart), and on runners that fuse stages the filters
cost nothing.
"""
from __future__ import annotations

from typing import Dict, Iterable, Sequence

import apache_beam as beam

from schemas.records import Rejection, SourceResult
from transforms.progress import progress

REJECTED = "rejected"
SOURCES = "sources"
OUTPUTS = (REJECTED, SOURCES)
MAIN = ""


def tagged(tag: str, record):
    """A record for the output named ``tag`` (``MAIN`` for the main output)."""
    return tag, record


def route(records: Iterable):
    """Tag rejections and source results; count them as they pass. Other records are main output."""
    for r in records:
        if isinstance(r, Rejection):
            if r.key is None:
                progress().add(sources_failed=1)
            else:
                progress().add(rejected=1)
            yield REJECTED, r
        elif isinstance(r, SourceResult):
            yield SOURCES, r
        else:
            yield MAIN, r


class Split(beam.PTransform):
    """``(tag, record)`` pairs → a dict of PCollections: ``main`` for untagged records, one per other tag."""

    def __init__(self, main: str, tags: Sequence[str] = OUTPUTS):
        super().__init__()
        self.main, self.tags = main, tuple(tags)

    def expand(self, pairs) -> Dict[str, beam.PCollection]:
        outs = {}
        for name, tag in ((self.main, MAIN),) + tuple((t, t) for t in self.tags):
            outs[name] = pairs | f"Only{name.title()}" >> beam.FlatMap(
                lambda pair, want: [pair[1]] if pair[0] == want else [], tag)
        return outs


class Routed(beam.PTransform):
    """Apply ``fn`` (a ParDo/FlatMap yielding ``(tag, record)`` pairs) and split its outputs by tag."""

    def __init__(self, fn: beam.PTransform, main: str, tags: Sequence[str] = OUTPUTS):
        super().__init__()
        self.fn, self.main, self.tags = fn, main, tuple(tags)

    def expand(self, pcoll) -> Dict[str, beam.PCollection]:
        return pcoll | "Apply" >> self.fn | "Split" >> Split(self.main, self.tags)


def with_outputs(fn: beam.PTransform, main: str, tags: Sequence[str] = OUTPUTS) -> Routed:
    """``fn``'s outputs as a dict: ``main`` and the two standard side outputs (or ``tags``)."""
    return Routed(fn, main, tags)
