"""What the transcribe stage reports: failure rows for a batch the model handler failed on, and
padding counters that stay exact when threads share one model."""
import dataclasses
import json
import shutil
import threading

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from asr.contract import AsrInputError
from asr.handler import CtcModelHandler
from asr.model import AsrModelSpec
from schemas.records import AsrBatch, Segment, Source
from tests.conftest import beam_pipeline
from transforms.transcribe import Transcribe


class BatchRefused(RuntimeError):
    pass


def asr_batch(source_id, lengths, seed=0):
    rng = np.random.default_rng(seed)
    src = Source(f"file:///{source_id}.wav", source_id)
    segs = tuple(Segment(f"{source_id}_{i:09d}", src, i, i + 1, 22050, "p", 0, 1) for i in range(len(lengths)))
    return AsrBatch(segs, tuple(rng.standard_normal(n).astype(np.float32) * 0.1 for n in lengths))


def test_a_batch_the_handler_fails_on_becomes_one_readable_row_per_clip(tiny_model):
    good, bad = asr_batch("good", [16000, 20000]), asr_batch("bad", [16000, 24000, 12000], seed=1)

    class RefusingHandler(CtcModelHandler):
        def transcribe(self, batch, model):
            if any(b.segments[0].source.source_id == "bad" for b in batch):
                raise BatchRefused(f"model refused {sum(len(b) for b in batch)} clips")
            return super().transcribe(batch, model)

    with beam_pipeline() as p:
        out = p | beam.Create([good, bad]) | Transcribe(AsrModelSpec(model=tiny_model), handler_cls=RefusingHandler)
        assert_that(out["failed"] | "Rows" >> beam.Map(lambda r: (r.key, r.stage, r.reason, r.detail)),
                    equal_to([(s.key, "transcribe", "asr_error", "BatchRefused: model refused 3 clips")
                              for s in bad.segments]), label="failures")
        assert_that(out["transcripts"] | "Keys" >> beam.Map(lambda t: t.key),
                    equal_to([s.key for s in good.segments]), label="transcripts")


class Tally:
    """A thread-safe stand-in for a Beam counter."""

    def __init__(self):
        self.total, self._lock = 0, threading.Lock()

    def inc(self, n=1):
        with self._lock:
            self.total += n


def expected_counts(batches):
    """(samples, padding) of AsrBatches that are each one model call, zero-padded to their longest clip."""
    lengths = [[len(a) for a in b.audio] for b in batches]
    return sum(sum(ls) for ls in lengths), sum(len(ls) * max(ls) - sum(ls) for ls in lengths)


def test_padding_counters_are_exact_when_threads_share_one_model(tiny_model, threads=4):
    handler = CtcModelHandler(AsrModelSpec(model=tiny_model))
    handler._samples, handler._padded = Tally(), Tally()
    model = handler.load_model()
    rng = np.random.default_rng(2)
    calls = [[asr_batch(f"t{t}c{c}b{b}", rng.integers(4000, 40000, rng.integers(1, 5)).tolist(), seed=t * 100 + c)
              for b in range(2)] for t in range(threads) for c in range(4)]
    start = threading.Barrier(threads)
    errors, carried = [], []

    def work(mine):
        try:
            start.wait()
            for batch in mine:
                out = handler.run_inference(batch, model)
                assert [len(r.inference.outputs) for r in out] == [len(b) for b in batch]
                carried.extend((r.inference.samples, r.inference.padded) for r in out)
        except Exception as e:  # reported by the main thread
            errors.append(e)

    pool = [threading.Thread(target=work, args=(calls[t::threads],)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert not errors
    samples, padding = expected_counts([b for call in calls for b in call])
    assert padding > 0
    assert (handler._samples.total, handler._padded.total) == (samples, padding)
    # the same totals travel with the results as data, for runners without metrics
    assert (sum(c[0] for c in carried), sum(c[1] for c in carried)) == (samples, padding)
    assert (model.stats.samples, model.stats.padded, model.stats.batches) == (samples, padding, 2 * len(calls))


def test_the_handler_takes_its_rate_from_the_model_and_refuses_another(tmp_path, tiny_model):
    model_dir = tmp_path / "at8k"
    shutil.copytree(tiny_model, model_dir)
    cfg_path = model_dir / "processor_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["feature_extractor"]["sampling_rate"] = 8000
    cfg_path.write_text(json.dumps(cfg))
    handler = CtcModelHandler(AsrModelSpec(model=str(model_dir)))
    model = handler.load_model()
    assert (model.m.sample_rate, model.m.contract.stride, model.m.contract.frame_s) == (8000, 320, 0.04)
    at_16k = asr_batch("wide", [16000, 20000])
    with pytest.raises(AsrInputError, match="at 16000 Hz, but .*at8k takes 8000 Hz"):
        handler.run_inference([at_16k], model)
    out = handler.run_inference([dataclasses.replace(at_16k, sample_rate=8000)], model)
    assert [o.error for o in out[0].inference.outputs] == [None, None]
