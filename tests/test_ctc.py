import math

import torch

from asr.ctc import greedy_decode

BLANK = 0


def onehot_logits(labels, vocab=6, sharp=20.0):
    x = torch.full((len(labels), vocab), 0.0)
    for t, l in enumerate(labels):
        x[t, l] = sharp
    return x


def test_collapse_repeats_and_drop_blanks():
    labels = [0, 3, 3, 0, 3, 4, 4, 4, 0, 0, 5, 0]
    r = greedy_decode(onehot_logits(labels).unsqueeze(0), torch.tensor([12]), BLANK)[0]
    assert r.ids == [3, 3, 4, 5]  # a blank between two 3s keeps both


def test_lengths_mask_padding_frames():
    logits = onehot_logits([3, 0, 4, 5, 5, 5]).unsqueeze(0)
    assert greedy_decode(logits, torch.tensor([3]), BLANK)[0].ids == [3, 4]


def test_confidence_is_geometric_mean_over_emitting_frames():
    # two emitting frames with known probabilities, blank frames ignored
    logits = torch.log(torch.tensor([[0.9, 0.05, 0.05], [0.2, 0.8, 0.0 + 1e-9], [0.1, 0.3, 0.6],
                                     [0.99, 0.005, 0.005]]))
    r = greedy_decode(logits.unsqueeze(0), torch.tensor([4]), BLANK)[0]
    assert r.ids == [1, 2]
    assert math.isclose(r.confidence, math.sqrt(0.8 * 0.6), rel_tol=1e-4)


def test_empty_transcript_has_zero_confidence():
    r = greedy_decode(onehot_logits([0, 0, 0]).unsqueeze(0), torch.tensor([3]), BLANK)[0]
    assert r.ids == [] and r.confidence == 0.0


def test_confidence_falls_as_frames_are_corrupted():
    g = torch.Generator().manual_seed(0)
    labels = [0, 1, 1, 0, 2, 0, 3, 3, 0, 4, 5, 0] * 8
    clean = onehot_logits(labels, sharp=8.0)
    confs = []
    for frac in (0.0, 0.2, 0.4, 0.6, 0.8):
        noisy = clean.clone()
        n = int(frac * len(labels))
        idx = torch.randperm(len(labels), generator=g)[:n]
        noisy[idx] = torch.randn(n, 6, generator=g) * 1.5
        confs.append(greedy_decode(noisy.unsqueeze(0), torch.tensor([len(labels)]), BLANK)[0].confidence)
    assert all(a > b for a, b in zip(confs, confs[1:])), confs
