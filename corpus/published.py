"""Which shards of a corpus are published: the ones a committed run wrote and no later commit removed.

Readers outside the build (exports, other tools) must not trust a listing of ``shards/``: a file
there may belong to a commit that is being applied or was interrupted, or be a stray copy. A shard
is published when a committed run's record (``runs/{tag}.json``) names it and no later commit
removed it (``corpus.integrity``); one that is missing or truncated is refused, naming it.
"""
from __future__ import annotations

from typing import List

from corpus import commit, guard, integrity
from corpus.layout import Layout
from storage import fs


class NotACorpusError(ValueError):
    """The path holds no speechmill corpus."""


class UnfinishedCommitError(ValueError):
    """A commit is being applied, or was interrupted: the published set is not settled."""


def check_corpus(root: str) -> Layout:
    """The corpus's layout; raises ``NotACorpusError`` when ``root`` has no committed run."""
    layout = Layout(root.rstrip("/"))
    guard.check_no_links(layout.root)
    if fs.is_local(layout.root) and not fs.exists(layout.root):
        raise NotACorpusError(f"{root} does not exist")
    if not [p for p in fs.list_dir(layout.path("runs"), suffix=".json") if not fs.is_temporary(p)]:
        raise NotACorpusError(f"{root} is not a speechmill corpus (no committed run in {layout.path('runs')})")
    return layout


def pending_commits(layout: Layout) -> List[str]:
    """Tags of commits whose journal is still there (being published now, or interrupted)."""
    return [p.rsplit("/", 1)[-1][:-len(".json")]
            for p in fs.list_dir(layout.path(commit.JOURNAL), suffix=".json") if not fs.is_temporary(p)]


def published_shards(root: str) -> List[str]:
    """Paths of the published shards of the corpus at ``root``, in name order.

    Raises ``NotACorpusError``, ``UnfinishedCommitError`` while a commit is open, and
    ``CorpusDamaged`` (naming the file) when a published file is missing, has another size than
    published, or the corpus names paths that are not its own.
    """
    layout = check_corpus(root)
    pending = pending_commits(layout)
    if pending:
        raise UnfinishedCommitError(
            f"{root} has an unfinished commit (run {', '.join(sorted(pending))}): a build or compaction is "
            f"publishing now, or was interrupted. Try again when it is done; the next build or "
            f"'python -m pipelines.compact {root}' finishes an interrupted one")
    pub = integrity.check_open(layout)
    names = sorted(rel[len("shards/"):] for rel in pub.files if rel.startswith("shards/"))
    return [layout.path("shards", n) for n in names]
