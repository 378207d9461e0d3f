"""Build a transcribed speech corpus: ``python -m pipelines.build_corpus --sources S --output O``.

The command line only: options become validated settings (``pipelines.options``), the run is driven
by ``run.driver`` (graphs in ``run.graph``, stages in ``transforms/``), and the exit status is set here.
"""
from __future__ import annotations

import _thread
import importlib
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Callable, List, Optional

from acquisition.sources_file import SourcesFileError, read_sources
from pipelines.options import build_parser, check_output, option_of, parse_args
from run.console import FilteredStderr, beam_quiet_args, log, quiet_libraries
from run.lock import LockLost
from run.settings import CorpusSettings, OptionError
from storage import fs

if TYPE_CHECKING:
    import apache_beam as beam

# The driver (Beam, the stages, their models) is imported once the options are read and checked,
# as ``pipelines.cli`` imports a subcommand: ``--help``, an option error or a refusal answers at once.
DRIVER = "run.driver"


def run(argv: Optional[List[str]] = None, make_pipeline: Optional[Callable[[], "beam.Pipeline"]] = None) -> dict:
    """Run one build; returns the whole corpus report. Raises ``SystemExit(2)`` on bad options."""
    try:
        settings, beam_args = parse_args(argv)
    except OptionError as e:
        log(f"error: {e}")
        raise SystemExit(2)
    refuse_early(settings)
    names = option_of(build_parser())
    shaping_options = {key: names.get(path, key) for key, path in settings.shaping_paths().items()}
    drive = importlib.import_module(DRIVER).drive
    return drive(settings, beam_quiet_args(beam_args, settings.verbose), make_pipeline,
                 check_output=check_output, option_of=shaping_options)


def refuse_early(settings: CorpusSettings) -> None:
    """The driver's first refusals (a local sources file that is missing or unreadable, an output
    that is not a corpus), made before the driver is imported so that they answer at once; the
    driver makes them again, for every kind of path."""
    if not fs.is_local(settings.sources) or os.path.isdir(fs.local_path(settings.sources)):
        return
    try:
        read_sources(settings.sources)
        check_output(settings.output)
    except (OptionError, ValueError, SourcesFileError) as e:
        log(f"error: {e}")
        raise SystemExit(2)


class _Interrupt:
    """Ctrl-C: remember it and raise ``KeyboardInterrupt`` as usual. Python drops an exception raised
    while it runs a weakref callback or a ``__del__`` (an import or a garbage collection can be doing
    so when the signal lands), and the run would go on to the end; so until :meth:`taken` is called
    the interrupt is raised again every second."""

    REPEAT_S = 1.0

    def __init__(self):
        self.seen = False
        self._taken = threading.Event()

    def __call__(self, signum, frame):
        if not self.seen:
            self.seen = True
            threading.Thread(target=self._repeat, name="interrupt-repeat", daemon=True).start()
        raise KeyboardInterrupt

    def _repeat(self) -> None:
        while not self._taken.wait(self.REPEAT_S):
            _thread.interrupt_main(signal.SIGINT)

    def taken(self) -> None:
        """The driver has the interrupt (or the run is over): stop raising it."""
        self._taken.set()


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    quiet_libraries(verbose)
    interrupt = _Interrupt()
    previous = signal.signal(signal.SIGINT, interrupt)
    with FilteredStderr(passthrough=verbose) as console:
        try:
            run(argv)
            if interrupt.seen:  # a library swallowed the KeyboardInterrupt (raised in a cleanup): still Ctrl-C
                raise KeyboardInterrupt
        except SystemExit as e:
            return int(e.code or 0)
        except BaseException as e:  # Ctrl-C surfaces as whatever Beam was doing
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the message
            interrupt.taken()
            if interrupt.seen or isinstance(e, KeyboardInterrupt):
                console.write_visible("[speechmill] interrupted: the waves already published are kept; run the "
                                      "same command again to go on from the next one")
                return 130
            if isinstance(e, LockLost):
                console.write_visible(f"[speechmill] error: {e}")
                return 1
            console.dump_hidden()
            console.write_visible(f"[speechmill] failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            console.write_visible("[speechmill] the waves already published are kept; fix the cause and run "
                                  "again to go on (--verbose shows every log line)")
            return 1
        finally:
            interrupt.taken()
            signal.signal(signal.SIGINT, previous)
    return 0


if __name__ == "__main__":
    code = main()
    # Everything the run writes is committed and the lock released by now. Leave without the
    # interpreter's teardown: after Ctrl-C Beam's worker threads may still be blocked in a download,
    # and after a multi-process run the runner's gRPC threads can abort the process while native
    # libraries are torn down ("terminate called without an active exception"), turning a finished
    # run into exit status -6.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
