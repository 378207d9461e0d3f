"""Changes of voice without a pause: what each side gives up.

The speaker stage finds a change of voice between utterances (stretches between pauses) and judges
them by 1.6 s partials, so where two people overlap, or one answers the other at once, the cut lands
only near the change: measured on real conversations with 0.4 s overlaps, the new voice starts up to
a second before the utterance boundary the cut is at, and often pauses after its first words, where
the splitter then cuts. Where the quiet between two turns of different voices is shorter than
``pause_s``, each turn therefore gives up ``guard_s`` beside the change, as a mixed turn of its own
(rejected as ``multi_speaker``, never kept). A source of one voice never loses anything to this.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, List, Sequence, Tuple

import numpy as np


def quiet_run(pause: np.ndarray, f: int, step: int, stop: int) -> int:
    """Frames of ``pause`` in a row from ``f`` in direction ``step`` (±1), up to ``stop``."""
    n = 0
    while f != stop and 0 <= f < len(pause) and pause[f]:
        n, f = n + 1, f + step
    return n


def guard_changes(turns: List[List], n_voices: int, pause: np.ndarray, hop_s: float, pause_s: float,
                  guard_s: float) -> List[List]:
    """The turns of each clip (``speakers.turns.Turn``, in time order, clips in time order), with
    ``guard_s`` given up each side of every change of voice that has less than ``pause_s`` of quiet
    (``pause``, a frame mask) between its turns, within a clip or across the cut between two."""
    guard, quiet_f = int(round(guard_s / hop_s)), int(round(pause_s / hop_s))
    if n_voices < 2 or guard <= 0 or quiet_f <= 0:
        return turns
    flat = [(c, i) for c, ts in enumerate(turns) for i in range(len(ts))]
    trim: Dict[Tuple[int, int], List[int]] = {}  # frames given up at the start and at the end

    def voice(t) -> int:  # -1: both voices (mixed), -2: not heard
        return -1 if t.mixed else -2 if t.voice is None else t.voice
    for (c0, i0), (c1, i1) in zip(flat, flat[1:]):
        left, right = turns[c0][i0], turns[c1][i1]
        a, b = voice(left), voice(right)
        if a == b or -2 in (a, b):
            continue
        gap = right.start - left.end
        if gap >= quiet_f or (gap + quiet_run(pause, left.end - 1, -1, left.start - 1)
                              + quiet_run(pause, right.start, 1, right.end)) >= quiet_f:
            continue
        if a >= 0:
            trim.setdefault((c0, i0), [0, 0])[1] = guard
        if b >= 0:
            trim.setdefault((c1, i1), [0, 0])[0] = guard
    return [_trimmed(ts, [trim.get((c, i), (0, 0)) for i in range(len(ts))]) for c, ts in enumerate(turns)] \
        if trim else turns


def _trimmed(turns: Sequence, trims: Sequence[Tuple[int, int]]) -> List:
    out = []
    for t, (head, tail) in zip(turns, trims):
        given = dict(embedding=None, mixed=True, voice_change_score=None, voice=None)
        if t.end - t.start <= head + tail:
            out.append(replace(t, **given))
            continue
        if head:
            out.append(replace(t, end=t.start + head, **given))
        out.append(replace(t, start=t.start + head, end=t.end - tail))
        if tail:
            out.append(replace(t, start=t.end - tail, **given))
    return out
