"""Prove a corpus whole: ``python -m pipelines.verify OUTPUT``.

Checks, without changing anything, that every file a committed run published is there with the
size and sha256 its run recorded; that every manifest row is a sample of its shard and every
sample a row; that sample keys are valid and unique; that nothing in the corpus's folders was
published by no run; that no folder or file of the corpus is a link; that no commit is left open;
and what the lock says. Exit 0 when whole; otherwise one line per problem on stderr and exit 1
(exit 2 when OUTPUT cannot be read at all). Object stores take the storage options a build takes
(--s3_endpoint_url, --s3_access_key_id, --s3_secret_access_key, --s3_region_name, --project ...).
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional

from corpus import integrity
from corpus.layout import Layout
from pipelines.report import storage_options
from run.lock import OutputLock
from storage import fs


def log(msg: str) -> None:
    print(f"[verify] {msg}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.verify", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("output", help="the corpus directory (local, gs:// or s3://)")
    return p


def lock_problem(layout: Layout) -> Optional[str]:
    """A line when a run holds the corpus's lock now (its files may be changing); None for no lock or a
    stale one (which the next command breaks, and which ``note`` mentions)."""
    lock = OutputLock(layout.root, "verify")
    if not fs.exists(lock.path):
        return None
    info = lock.read()
    if info is None or lock.is_stale(info):
        log(f"note: {lock.path} is a stale lock ({lock.describe(info) if info else 'unreadable'}); the next "
            f"command breaks it")
        return None
    return f"{lock.path}: a run is writing to the corpus now ({lock.describe(info)}); verify again when it is done"


def verify(output: str) -> List[str]:
    """The problems of the corpus at ``output`` (an empty list: it is whole)."""
    layout = Layout(output.rstrip("/"))
    if fs.is_local(layout.root) and not fs.exists(layout.root):
        raise ValueError(f"{output} does not exist")
    problems = integrity.verify(layout, log)
    held = lock_problem(layout)
    return problems + ([held] if held else [])


def main(argv: Optional[List[str]] = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    started = time.monotonic()
    try:
        storage_options(extra)
        problems = verify(args.output)
    except ValueError as e:
        log(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except Exception as e:  # noqa: BLE001 - storage errors: one line, not a traceback
        log(f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return 2
    for line in problems:
        print(line, flush=True)
    if problems:
        log(f"{args.output} is damaged: {len(problems)} problem{'s' if len(problems) != 1 else ''} "
            f"({time.monotonic() - started:.1f} s)")
        return 1
    log(f"{args.output} is whole ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
