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


def edit_distance(a, b):
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def test_confidence_falls_as_the_error_rate_rises():
    """Known-correct frames progressively replaced by noise: CER rises, confidence falls with it."""
    g = torch.Generator().manual_seed(0)
    labels = [0, 1, 1, 0, 2, 0, 3, 3, 0, 4, 5, 0] * 8
    clean = onehot_logits(labels, sharp=8.0)
    truth = greedy_decode(clean.unsqueeze(0), torch.tensor([len(labels)]), BLANK)[0].ids
    order = torch.randperm(len(labels), generator=g)
    noise = torch.randn(len(labels), 6, generator=g) * 1.5
    confs, cers = [], []
    for frac in (0.0, 0.2, 0.4, 0.6, 0.8):
        idx = order[: int(frac * len(labels))]  # nested: each level corrupts the previous frames and more
        noisy = clean.clone()
        noisy[idx] = noise[idx]
        r = greedy_decode(noisy.unsqueeze(0), torch.tensor([len(labels)]), BLANK)[0]
        confs.append(r.confidence)
        cers.append(edit_distance(truth, r.ids) / len(truth))
    assert cers[0] == 0 and all(b >= a for a, b in zip(cers, cers[1:])) and cers[-1] > 0.3, cers
    assert all(a > b for a, b in zip(confs, confs[1:])), confs
