"""``speechmill``: one command for every entry point, as ``speechmill SUBCOMMAND [options]``.

Each subcommand is the ``python -m pipelines.X`` module of the same job with the same options; the
module is imported only when its subcommand runs, so ``speechmill --help`` answers at once.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import List, Optional

# subcommand → (module with main(argv), one line of help)
COMMANDS = {
    "build": ("pipelines.build_corpus", "build or extend a corpus from a sources file or folder"),
    "compact": ("pipelines.compact", "merge a corpus's partial shards"),
    "report": ("pipelines.report", "rebuild report.html of a corpus"),
    "verify": ("pipelines.verify", "check that a corpus is whole: every file, checksum, row and sample"),
    "export": ("pipelines.export_lhotse", "export a corpus as Lhotse Shar"),
    "train": (None, "train a model on a corpus: train tortoise | clvp | cvvp [options]"),
    "synthesize": ("pipelines.synthesize", "speak text with trained models"),
    "demo": ("pipelines.make_demo", "write the demo's sources and model"),
}
TRAINERS = {"tortoise": "pipelines.train_tortoise", "clvp": "pipelines.train_clvp", "cvvp": "pipelines.train_cvvp"}


def usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: speechmill SUBCOMMAND [options]   (speechmill SUBCOMMAND --help for its options)", "",
             "subcommands:"]
    lines += [f"  {name:{width}s}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"speechmill: unknown subcommand {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = COMMANDS[name][0]
    if name == "train":
        if not rest or rest[0] not in TRAINERS:
            print(f"usage: speechmill train {{{' | '.join(TRAINERS)}}} [options]", file=sys.stderr)
            return 0 if rest[:1] in (["-h"], ["--help"]) else 2
        module, rest = TRAINERS[rest[0]], rest[1:]
    code = int(importlib.import_module(module).main(rest) or 0)
    if name == "build":
        # as ``python -m pipelines.build_corpus`` does: the run is committed, leave without the
        # interpreter's teardown (a multi-process run's gRPC threads can abort it)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
