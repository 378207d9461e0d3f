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


def reference_collapse(labels, logp, blank):
    """The textbook greedy CTC walk, one frame at a time."""
    ids, spans, sums = [], [], []
    prev = None
    for t, (b, lp) in enumerate(zip(labels, logp)):
        if b != blank and b == prev:
            spans[-1] = (spans[-1][0], t + 1)
            sums[-1] += lp
        elif b != blank:
            ids.append(b)
            spans.append((t, t + 1))
            sums.append(lp)
        prev = b
    return ids, spans, sums


def test_vectorised_collapse_matches_the_frame_by_frame_walk():
    import numpy as np

    from asr.ctc import collapse
    rng = np.random.default_rng(0)
    rows = []
    for n in [0, 1, 7, 50, 333, 2, 1000]:
        # few labels with long runs and frequent blanks, like a CTC model's output
        labels = rng.choice([0, 0, 0, 1, 2, 3], size=n)
        labels = np.repeat(labels, rng.integers(1, 4, size=n))[:n] if n else labels
        rows.append((labels.astype(np.int32), rng.uniform(-3, 0, size=n).astype(np.float32)))
    got = collapse([r[0] for r in rows], [r[1] for r in rows], BLANK, keep_frames=True)
    for (labels, logp), r in zip(rows, got):
        ids, spans, sums = reference_collapse(labels.tolist(), logp.astype(np.float64).tolist(), BLANK)
        assert r.ids == ids and r.spans == spans and r.frames == labels.tolist()
        assert np.allclose(r.logp, sums)
        frames = sum(e - s for s, e in spans)
        expected = math.exp(sum(sums) / frames) if ids else 0.0
        assert math.isclose(r.confidence, expected, rel_tol=1e-9)


def test_words_split_at_delimiters_and_skip_special_labels():
    import numpy as np

    from asr.ctc import CtcResult, Vocabulary
    vocab = Vocabulary({0: "<pad>", 1: "|", 2: "a", 3: "b", 4: "<unk>"}, "|", special={"<pad>", "<unk>"})
    ids = [1, 2, 4, 3, 1, 1, 3, 2, 1]  # leading/double/trailing delimiters; <unk> inside "ab"
    starts = np.arange(len(ids)) * 3
    ends = starts + 2
    logp = np.log(np.array([0.9, 0.8, 0.1, 0.6, 0.9, 0.9, 0.5, 0.4, 0.9])) * 2
    text, words = vocab.words(CtcResult(ids, starts, ends, logp, 0.0, 30), frame_s=0.02)
    assert text == "ab ba" and [w.text for w in words] == ["ab", "ba"]
    assert (words[0].start_s, words[0].end_s) == (0.06, 0.22) and (words[1].start_s, words[1].end_s) == (0.36, 0.46)
    assert math.isclose(words[0].confidence, math.sqrt(0.8 * 0.6), rel_tol=1e-3)
    assert math.isclose(words[1].confidence, math.sqrt(0.5 * 0.4), rel_tol=1e-3)
