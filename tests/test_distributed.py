"""Beyond one machine: the same pipeline on a dask.distributed cluster (scheduler and two worker
processes on 127.0.0.1), wave commits on an S3 server (moto), and the job as Dataflow would get it."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.build_corpus import run
from pipelines.make_demo import make_demo
from tests.conftest import REPO, corpus_digests, local_files, permissive
from tests.test_build_corpus import write_sources

ASR_HINT = "type:nvidia-l4;count:1;install-nvidia-driver"


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A scheduler and a worker command with two single-threaded worker processes, as on a cluster."""
    from distributed import Client
    folder = tmp_path_factory.mktemp("dask")
    scheduler_file = folder / "scheduler.json"
    env = {**os.environ, "DASK_LOGGING__DISTRIBUTED": "warning"}
    dask = str(Path(sys.executable).parent / "dask")
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(scheduler_file)], env=env, cwd=folder)]
    deadline = time.monotonic() + 300  # a bound for a loaded machine, not a measurement
    while not scheduler_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    worker_log = open(folder / "workers.log", "w")
    procs.append(subprocess.Popen([dask, "worker", "--scheduler-file", str(scheduler_file), "--nworkers", "2",
                                   "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"], env=env, cwd=folder,
                                  stderr=worker_log))
    try:
        with Client(scheduler_file=str(scheduler_file), timeout=60) as client:
            client.wait_for_workers(2, timeout=600)
            assert all(addr.startswith("tcp://127.0.0.1:") for addr in client.scheduler_info()["workers"])
        yield scheduler_file, folder / "workers.log"
    finally:
        worker_log.close()
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def demo_args(demo: Path, out: Path) -> list:
    """The demo's command line (scripts/demo.sh) with the demo's tiny CTC model in place of Whisper."""
    return ["--sources", str(demo / "sources.txt"), "--output", str(out), "--asr_model", str(demo / "tiny-wav2vec2"),
            "--min_confidence", "0", "--min_chars_per_s", "0", "--max_chars_per_s", "1000", "--samples_per_shard", "8"]


def test_the_demo_corpus_on_dask_equals_the_direct_runners_byte_for_byte(tmp_path, dask_cluster):
    demo = tmp_path / "demo"
    make_demo(str(demo))
    direct = tmp_path / "direct"
    report = run(demo_args(demo, direct))
    assert report["sources"]["ok"] == 3 and report["kept"] > 0

    on_dask = tmp_path / "dask"
    scheduler_file, worker_log = dask_cluster
    proc = subprocess.run([sys.executable, "-m", "pipelines.build_corpus", *demo_args(demo, on_dask),
                           "--runner", "DaskRunner", "--dask_scheduler_file", str(scheduler_file)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the work really ran in the cluster's two worker processes, each printing its own progress
    logged = worker_log.read_text()
    worker_pids = set(re.findall(r"\[speechmill pid (\d+)\]", logged))
    assert len(worker_pids) == 2, logged[-3000:]
    assert "Loading weights" not in logged  # no model-loading bar for the workers' lines to be glued to

    expected, got = corpus_digests(local_files(direct)), corpus_digests(local_files(on_dask))
    assert any(k.startswith("shards/") for k in expected) and any(k.startswith("runs/") for k in expected)
    assert got == expected


def s3_files(client, bucket: str, prefix: str) -> dict:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"][len(prefix):]] = client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
    return out


def test_a_killed_run_with_its_output_on_s3_resumes_to_the_same_corpus(s3, tmp_path, tiny_model, speech):
    client, opts = s3
    client.create_bucket(Bucket="corpora")
    sources = write_sources(tmp_path / "s.txt", [speech["a"][1], speech["b"][1], tmp_path / "missing.wav"])
    common = ["--sources", sources, *permissive(tiny_model), "--samples_per_shard", "2", "--speakers", "off",
              "--commit_every_hours", "0.002", *opts]  # ≈ 7 s of estimated audio: every source is a wave of its own
    run(["--output", str(tmp_path / "reference"), *common])  # the same run on local disk, uninterrupted
    reference = local_files(tmp_path / "reference")
    assert len([k for k in reference if k.startswith("runs/")]) == 3

    args = ["--output", "s3://corpora/resumed", *common]
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.build_corpus", *args], cwd=REPO, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    for line in proc.stderr:
        if "wave 2 of 3" in line:  # one wave is published, the second is running
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = s3_files(client, "corpora", "resumed/")
    assert len([k for k in partial if k.startswith("runs/")]) == 1
    assert any(k.startswith("shards/") for k in partial)

    run(args)  # carries on with waves 2 and 3
    resumed = s3_files(client, "corpora", "resumed/")
    assert corpus_digests(resumed) == corpus_digests(reference)
    assert not [k for k in resumed if k.startswith(("_work/", "_journal/"))]


def test_only_the_asr_step_asks_for_a_gpu_on_dataflow(tiny_model):
    """The job DataflowRunner would submit (``--dry_run``: built, not sent): the accelerator hint is on
    the transcription step and nothing else, and no worker-wide accelerator is asked for."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

    from corpus.layout import Layout
    from pipelines.options import parse_args
    from run.graph import build_wave
    from schemas.records import Source

    settings, beam_args = parse_args([
        "--sources", "gs://demo-bucket/sources.txt", "--output", "gs://demo-bucket/corpus", "--asr_model", tiny_model,
        "--asr_device", "cuda", "--asr_accelerator", ASR_HINT,
        "--runner", "DataflowRunner", "--project", "demo-project", "--region", "us-central1",
        "--temp_location", "gs://demo-bucket/tmp", "--staging_location", "gs://demo-bucket/staging",
        "--sdk_container_image", "us-docker.pkg.dev/demo-project/speechmill/worker:latest",
        "--machine_type", "n1-standard-8", "--dry_run=True"])
    options = PipelineOptions(beam_args)
    p = beam.Pipeline(options=options)
    build_wave(p, [Source("gs://demo-bucket/talk.mp3", "talk")], settings, Layout(settings.output).work("t"), 0, "t")
    job = p.run().job
    proto = job.proto_pipeline
    envs = proto.components.environments
    hinted = {t.unique_name for t in proto.components.transforms.values()
              if "beam:resources:accelerator:v1" in envs[t.environment_id].resource_hints} \
        if envs else set()
    assert "Transcribe/Wav2Vec2CTC/BeamML_RunInference" in hinted  # the ParDo that runs the model
    assert hinted and all(name.startswith("Transcribe/Wav2Vec2CTC") for name in hinted), hinted
    assert {envs[t.environment_id].resource_hints["beam:resources:accelerator:v1"]
            for t in proto.components.transforms.values() if t.unique_name in hinted} == {ASR_HINT.encode()}
    # the steps around it carry no hint: segmenting and writing run on plain workers
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert {"Segment/SplitOnSilence/Apply", "Shard/WriteTar"} & names and not {"Segment/SplitOnSilence/Apply"} & hinted
    assert not any("accelerator" in o for o in (options.view_as(GoogleCloudOptions).dataflow_service_options or []))
