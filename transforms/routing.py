"""One convention for every stage's outputs, and the one helper that routes and counts them.

A stage's DoFn yields its main records, ``Rejection``s and ``SourceResult``s; ``route`` sends the
last two to the ``rejected`` and ``sources`` outputs and keeps the progress counters, so every
transform reads alike and no stage invents its own tags.
"""
from __future__ import annotations

from typing import Iterable

import apache_beam as beam

from corpus.progress import progress
from schemas.records import Rejection, SourceResult

REJECTED = "rejected"
SOURCES = "sources"
OUTPUTS = (REJECTED, SOURCES)


def route(records: Iterable):
    """Tag rejections and source results; count them as they pass."""
    for r in records:
        if isinstance(r, Rejection):
            if r.key is None:
                progress().add(sources_failed=1)
            else:
                progress().add(rejected=1)
            yield beam.pvalue.TaggedOutput(REJECTED, r)
        elif isinstance(r, SourceResult):
            yield beam.pvalue.TaggedOutput(SOURCES, r)
        else:
            yield r


def with_outputs(pardo: beam.ParDo, main: str):
    """``pardo.with_outputs`` with the two standard side outputs."""
    return pardo.with_outputs(*OUTPUTS, main=main)
