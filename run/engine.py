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
import sys
from typing import Dict, Iterator, List, Optional

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
IN_MEMORY_RUNNER = "run.in_memory.InMemoryRunner"  # Beam's DirectRunner minus its download of Prism
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
    """Beam's arguments with ``--runner DaskRunner`` spelled as Beam needs it (its full class path),
    and ``--runner DirectRunner`` made :data:`IN_MEMORY_RUNNER` (see ``run.in_memory``).

    On Dask, a wave's items are spread one per partition unless ``--dask_npartitions`` or
    ``--dask_partition_size`` says otherwise: an item is a whole recording, and the runner's own
    default (128 elements per partition) would give all of a small wave to one worker.
    """
    args = list(beam_args)
    i, prefix, name = _runner_at(args)
    if name is None:  # added once the options are checked (checking Beam's options imports Beam)
        return args
    if name in ("DirectRunner", "apache_beam.runners.direct.direct_runner.DirectRunner"):
        args[i] = prefix + IN_MEMORY_RUNNER
        return args
    if not is_dask(args):
        return args
    args[i] = prefix + DASK_RUNNER
    importlib.import_module("apache_beam.runners.dask.dask_runner")  # registers the --dask_* options
    if not _given(args, _PARTITION_OPTIONS):
        args.append("--dask_partition_size=1")
    return args


def with_default_runner(beam_args: List[str]) -> List[str]:
    """The arguments, with ``--runner`` :data:`IN_MEMORY_RUNNER` where they name no runner."""
    return list(beam_args) if _runner_at(beam_args)[2] else [*beam_args, f"--runner={IN_MEMORY_RUNNER}"]


def cluster_of(args: List[str]) -> Optional[Dict[str, str]]:
    """The Dask cluster the arguments name (``{"address": …}`` or ``{"scheduler_file": …}``), else None."""
    if not is_dask(args):
        return None
    for name, key in zip(_CLUSTER_OPTIONS, ("address", "scheduler_file")):
        for i, a in enumerate(args):
            if a.startswith(name + "="):
                return {key: a.split("=", 1)[1]}
            if a == name and i + 1 < len(args):
                return {key: args[i + 1]}
    return None


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# oneDNN (torch's CPU kernels) caches a compiled primitive, with its scratch memory, for every input
# shape it meets; ASR batches come in many lengths, so a long source grew the process by about
# 1 MB a clip (measured: a 40-minute source peaked at 1.26 GB with the cache, 0.89 GB without).
# Building a primitive again costs microseconds against a batch's seconds of compute.
ONEDNN_CACHE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"


def threads_per_process() -> int:
    """Compute threads each process of a run uses: ``OMP_NUM_THREADS`` where the user set it, else 1.

    Every runner gets the same budget: one intra-op thread a process, the cores used by processes
    (DirectRunner's ``multi_processing`` workers, Dask workers). A thread per core in every process
    spins while it waits for a core on a busy machine (the encoder burns about nine times the CPU
    for the same work), and the voice encoder's floats depend on the thread count, so one budget
    everywhere also gives the same ``speaker_embedding`` bits whichever runner built the corpus.
    """
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return 1


def apply_threads(threads: int) -> None:
    """Set the budget for this process (torch if it is loaded already) and for the processes it starts."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def thread_budget() -> Iterator[int]:
    """Run with :func:`threads_per_process` compute threads in this process and in the worker processes
    it starts (through the environment, read by torch, OpenMP and BLAS as they start); the
    environment and torch's setting are put back afterwards. Yields the budget. oneDNN's shape cache
    is off unless the user set ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` (see ``ONEDNN_CACHE``)."""
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES + (ONEDNN_CACHE,)}
    torch = sys.modules.get("torch")
    torch_threads = torch.get_num_threads() if torch is not None else None
    threads = threads_per_process()
    apply_threads(threads)
    os.environ.setdefault(ONEDNN_CACHE, "0")
    try:
        yield threads
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        torch = sys.modules.get("torch")
        if torch is not None and torch_threads is not None and torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)


@contextlib.contextmanager
def engine(beam_args: List[str]) -> Iterator[List[str]]:
    """Yield the arguments every pipeline of a run uses; on Dask without a cluster address, start a
    local cluster (worker processes on 127.0.0.1, one thread each) for the whole run. Every runner
    runs under one :func:`thread_budget`."""
    with thread_budget():
        if not is_dask(beam_args) or _given(beam_args, _CLUSTER_OPTIONS):
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
