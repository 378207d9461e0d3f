"""The runner a build uses when none is named: Beam's DirectRunner without its first try of Prism.

Beam's DirectRunner first offers every pipeline to the Prism runner, a program it downloads from
GitHub at run time; offline the fetch fails and it falls back to its in-memory FnApiRunner, online
the run would depend on a download and on an engine speechmill is not built or tested on. This
runner goes straight to the fallback: the same FnApiRunner, the same ``--direct_running_mode`` and
``--direct_num_workers``, with nothing fetched.
"""
from __future__ import annotations

from apache_beam.runners.direct.direct_runner import DirectRunner


class InMemoryRunner(DirectRunner):
    """DirectRunner that never offers the pipeline to Prism (it skips Prism for interactive runs,
    and this flag is all that tells it so)."""

    _is_interactive = True

    def is_fnapi_compatible(self) -> bool:
        """Batch pipelines run on the FnApiRunner: no test round trip through the runner API first
        (Beam skips it for its own DirectRunner by that class's name, which a subclass does not have)."""
        return True
