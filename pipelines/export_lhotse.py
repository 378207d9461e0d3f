"""Export a corpus as a Lhotse cut set: ``python -m pipelines.export_lhotse OUTPUT [--out DIR]``.

Writes the corpus's published samples in Lhotse Shar form, one Shar shard per corpus shard:
DIR/cuts.NNNNNN.jsonl.gz (cuts with the transcript, speaker, word alignment and metadata) and
DIR/recording.NNNNNN.tar (the audio bytes as they are in the corpus shards). Load it with
``lhotse.CutSet.from_shar(in_dir=DIR)``. The export is built in a temporary folder and renamed
into place, replacing an earlier export in DIR; a folder holding anything else is refused.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from exports.lhotse import ExportError, export_shar
from run.console import logger

log = logger("export_lhotse")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.export_lhotse", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("output", help="the corpus folder (what --output of build_corpus named)")
    p.add_argument("--out", default=None, metavar="DIR", help="local folder for the Lhotse Shar export (default: OUTPUT/lhotse)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = export_shar(args.output, args.out, log=log)
    except (ExportError, ValueError, FileNotFoundError) as e:
        log(f"error: {e}")
        return 2
    except OSError as e:
        log(f"error: {type(e).__name__}: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted: nothing was written (an earlier export in the folder is unchanged)")
        return 130
    log(f"wrote {result.cuts} cuts ({result.hours:.3f} h) in {result.shards} Shar shards to {result.out}")
    log(f"load it with: lhotse.CutSet.from_shar(in_dir={result.out!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
