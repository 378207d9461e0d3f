"""The thread budget: one compute thread a process on every runner unless the user set another."""
import os

import pytest
import torch

from run.engine import ONEDNN_CACHE, THREAD_VARIABLES, engine


def test_every_runner_runs_one_compute_thread_a_process_and_puts_the_setting_back(monkeypatch):
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for args in ([], ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]):
            with engine(args):
                assert torch.get_num_threads() == 1
                assert all(os.environ[name] == "1" for name in THREAD_VARIABLES)
            assert torch.get_num_threads() == 2
            assert not any(name in os.environ for name in THREAD_VARIABLES)
    finally:
        torch.set_num_threads(before)


def test_a_budget_the_user_set_is_kept(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    before = torch.get_num_threads()
    try:
        with engine([]):
            assert torch.get_num_threads() == 3
            assert os.environ["MKL_NUM_THREADS"] == "3"
        assert os.environ["OMP_NUM_THREADS"] == "3"
    finally:
        torch.set_num_threads(before)


def test_onednn_keeps_no_primitive_per_shape_during_a_run_unless_the_user_says(monkeypatch):
    monkeypatch.delenv(ONEDNN_CACHE, raising=False)
    with engine([]):
        assert os.environ[ONEDNN_CACHE] == "0"
    assert ONEDNN_CACHE not in os.environ
    monkeypatch.setenv(ONEDNN_CACHE, "64")
    with engine([]):
        assert os.environ[ONEDNN_CACHE] == "64"


def test_the_default_runner_fetches_nothing(caplog, monkeypatch):
    """Beam's DirectRunner first offers a pipeline to Prism, downloaded from GitHub at run time; a
    build without ``--runner`` (or with ``DirectRunner``) goes straight to the in-memory runner, and
    as Beam's own does, without a test round trip of the whole graph through the runner API."""
    import logging

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to

    from run.engine import IN_MEMORY_RUNNER, runner_args, with_default_runner
    assert with_default_runner(runner_args([])) == [f"--runner={IN_MEMORY_RUNNER}"]
    assert runner_args(["--runner", "DirectRunner", "--direct_num_workers=2"]) == \
        ["--runner", IN_MEMORY_RUNNER, "--direct_num_workers=2"]
    assert with_default_runner(["--runner=DataflowRunner"]) == ["--runner=DataflowRunner"]  # a runner chosen stays
    caplog.set_level(logging.INFO)
    rebuilt = []
    monkeypatch.setattr(beam.Pipeline, "from_runner_api", lambda *a, **k: rebuilt.append(1) or pytest.fail("round trip"))
    with beam.Pipeline(options=PipelineOptions(with_default_runner([]))) as p:
        assert_that(p | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * 2), equal_to([2, 4, 6]))
    assert not [r for r in caplog.records if "prism" in r.getMessage().lower()], caplog.text
    assert not rebuilt
