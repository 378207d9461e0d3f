"""Which engine runs the pipeline: Beam's own option handling, plus what the Dask runner needs.

The pipeline code is the same on every runner; only the arguments differ. ``--runner DaskRunner``
is accepted by its short name, and without ``--dask_client_address`` (or ``--dask_scheduler_file``)
a run starts one local dask.distributed cluster on 127.0.0.1 for all of its pipelines (listing and
waves) instead of letting each pipeline start its own.
"""
from __future__ import annotations

import contextlib
import importlib
import os
from typing import Iterator, List

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
_PARTITION_OPTIONS = ("--dask_npartitions", "--dask_partition_size")
_CLUSTER_OPTIONS = ("--dask_client_address", "--dask_scheduler_file")


def _runner_at(args: List[str]):
    """(index of the runner's value, prefix to keep, runner name) of the last ``--runner``."""
    found = (None, "", None)
    for i, a in enumerate(args):
        if a == "--runner" and i + 1 < len(args):
            found = (i + 1, "", args[i + 1])
        elif a.startswith("--runner="):
            found = (i, "--runner=", a.split("=", 1)[1])
    return found


def _given(args: List[str], names) -> bool:
    return any(a.split("=", 1)[0] in names for a in args)


def is_dask(args: List[str]) -> bool:
    return _runner_at(args)[2] in ("DaskRunner", DASK_RUNNER)


def runner_args(beam_args: List[str]) -> List[str]:
    """Beam's arguments with ``--runner DaskRunner`` spelled as Beam needs it (its full class path).

    On Dask, a wave's items are spread one per partition unless ``--dask_npartitions`` or
    ``--dask_partition_size`` says otherwise: an item is a whole recording, and the runner's own
    default (128 elements per partition) would give all of a small wave to one worker.
    """
    args = list(beam_args)
    if not is_dask(args):
        return args
    i, prefix, _ = _runner_at(args)
    args[i] = prefix + DASK_RUNNER
    importlib.import_module("apache_beam.runners.dask.dask_runner")  # registers the --dask_* options
    if not _given(args, _PARTITION_OPTIONS):
        args.append("--dask_partition_size=1")
    return args


def local_worker_processes(beam_args: List[str]) -> int:
    """How many worker processes of this run share this machine's cores (1 in memory)."""
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
    options = PipelineOptions(beam_args)
    runner = options.view_as(StandardOptions).runner
    direct = options.view_as(DirectOptions)
    if runner not in (None, "DirectRunner", "SwitchingDirectRunner", "FnApiRunner") \
            or direct.direct_running_mode != "multi_processing":
        return 1
    n = direct.direct_num_workers
    return (os.cpu_count() or 1) if n == 0 else max(1, n or 1)  # Beam reads 0 as one per core


@contextlib.contextmanager
def thread_budget(processes: int) -> Iterator[None]:
    """Split the cores between ``processes`` worker processes on this machine.

    torch and OpenMP otherwise give every process a thread per core: two workers on two cores run
    four compute threads that spin while they wait for a core, which costs more CPU and more time
    than one process alone. The budget reaches the workers through ``OMP_NUM_THREADS`` (read by
    torch as it starts); a value the user set is kept.
    """
    if processes <= 1 or "OMP_NUM_THREADS" in os.environ:
        yield
        return
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
    try:
        yield
    finally:
        os.environ.pop("OMP_NUM_THREADS", None)


@contextlib.contextmanager
def engine(beam_args: List[str]) -> Iterator[List[str]]:
    """Yield the arguments every pipeline of a run uses; on Dask without a cluster address, start a
    local cluster (worker processes on 127.0.0.1, one thread each) for the whole run; with several
    DirectRunner worker processes, split the cores between them."""
    if not is_dask(beam_args) or _given(beam_args, _CLUSTER_OPTIONS):
        with thread_budget(local_worker_processes(beam_args)):
            yield list(beam_args)
        return
    from distributed import LocalCluster
    with LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        yield list(beam_args) + [f"--dask_client_address={cluster.scheduler_address}"]


def run_to_end(pipeline) -> None:
    """Run a pipeline to completion, then let go of what its runner holds open (the Dask runner keeps
    a client connected to the cluster for each pipeline)."""
    result = pipeline.run()
    try:
        result.wait_until_finish()
    finally:
        client = getattr(result, "client", None)
        if client is not None:
            client.close()
