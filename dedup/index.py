"""A fingerprint index for near-duplicate audio that scales past millions of clips without comparing pairs.

Candidates come from hashed sub-fingerprint bands: each 32-bit sub-fingerprint is split into two
16-bit bands (its even and its odd bits: one bit of each of Chromaprint's 16 two-bit classifiers),
and a band value is looked up exactly. A re-encoded, re-gained or resampled copy flips a few bits
per item, so whole items rarely match but one of the two bands often does (≈ 50 % of items after
MP3 → Opus 32 kbps and −3 dB on read speech, against ≈ 10 % for whole items). Hits vote for a
(clip, time offset) pair; the best-voted pairs are verified by the bit-error rate of 1 s windows of
the aligned items: at most ≈ 0.06 for a re-encoded copy, ≈ 0.4-0.5 for other audio, even by the
same voice, and under 0.2 in none of 720,000 windows of unrelated speech (``benchmarks.dedup``).

The bulk of the index (the published corpus) is sorted numpy arrays, about 20 bytes per item
(≈ 160 bytes per second of audio); items added while a run decides go into a small dict.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from dedup.fingerprint import ITEM_S

BANDS = (np.uint32(0x55555555), np.uint32(0xAAAAAAAA))
_POP8 = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint32."""
    x = x.astype(np.uint32, copy=False)
    return (_POP8[x & 255] + _POP8[(x >> 8) & 255] + _POP8[(x >> 16) & 255] + _POP8[x >> 24]).astype(np.int32)


@dataclass(frozen=True)
class MatchParams:
    max_ber: float = 0.2  # a window of items matches when at most this fraction of its bits differ
    window_s: float = 1.0  # the window the bit-error rate is judged over
    min_match_s: float = 2.0  # less repeated audio than this is no duplicate
    min_votes: int = 2  # band hits at one (clip, offset) before it is verified
    candidates: int = 8  # best-voted (clip, offset) pairs verified per query
    max_bucket: int = 20000  # a band value held by more items than this says nothing (silence, hum)


@dataclass(frozen=True)
class Match:
    key: str  # the indexed clip the query repeats
    offset_s: float  # where the query starts in it (negative: before it)
    matched_s: float  # how much of the query lies over matching audio
    fraction: float  # matched_s over the query's length
    ber: float  # bit-error rate over the matching items


def matched_items(query: np.ndarray, target: np.ndarray, offset: int, params: MatchParams) -> np.ndarray:
    """Bit errors of each item of ``query`` against ``target`` shifted by ``offset``, where it lies in a
    window that matches (at most ``max_ber``); -1 elsewhere."""
    out = np.full(len(query), -1, np.int32)
    j0, j1 = max(0, -offset), min(len(query), len(target) - offset)
    if j1 - j0 <= 0:
        return out
    errors = popcount(query[j0:j1] ^ target[j0 + offset:j1 + offset])
    w = max(1, min(len(errors), int(round(params.window_s / ITEM_S))))
    sums = np.convolve(errors.astype(np.float64), np.ones(w), mode="valid") / (32.0 * w)  # each window's rate
    good = np.zeros(len(errors), bool)
    for start in np.flatnonzero(sums <= params.max_ber):
        good[start:start + w] = True
    out[j0:j1][good] = errors[good]
    return out


class FingerprintIndex:
    """Clips' fingerprints, searchable by any stretch of audio they hold."""

    def __init__(self, params: MatchParams = MatchParams()):
        self.params = params
        self.keys: List[str] = []
        self.fps: List[np.ndarray] = []
        self._sorted: List[Tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # per band: values, entries, positions
        self._recent: List[Dict[int, List[Tuple[int, int]]]] = [{} for _ in BANDS]

    @classmethod
    def build(cls, keys: Sequence[str], fps: Sequence[np.ndarray], params: MatchParams = MatchParams()):
        """An index of many clips at once (sorted arrays)."""
        index = cls(params)
        index.keys = list(keys)
        index.fps = [np.asarray(f, np.uint32) for f in fps]
        lengths = np.array([len(f) for f in index.fps], np.int64)
        allfp = np.concatenate(index.fps) if index.fps else np.zeros(0, np.uint32)
        entries = np.repeat(np.arange(len(index.fps), dtype=np.uint32), lengths)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else np.zeros(0, np.int64)
        positions = (np.arange(len(allfp), dtype=np.int64) - np.repeat(starts, lengths)).astype(np.uint32)
        for mask in BANDS:
            values = allfp & mask
            order = np.argsort(values, kind="stable")
            index._sorted.append((values[order], entries[order], positions[order]))
        return index

    def overlay(self) -> "FingerprintIndex":
        """A copy whose additions leave this index as it is (the sorted arrays are shared)."""
        other = FingerprintIndex(self.params)
        other.keys, other.fps, other._sorted = list(self.keys), list(self.fps), self._sorted
        other._recent = [{v: list(h) for v, h in t.items()} for t in self._recent]
        return other

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, key: str, fp: np.ndarray) -> None:
        """Index one more clip (kept in a dict: for the clips a run keeps as it decides)."""
        entry = len(self.keys)
        self.keys.append(key)
        fp = np.asarray(fp, np.uint32)
        self.fps.append(fp)
        for band, mask in enumerate(BANDS):
            table = self._recent[band]
            for pos, v in enumerate((fp & mask).tolist()):
                table.setdefault(v, []).append((entry, pos))

    def _hits(self, query: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(entry, offset) of every band hit of ``query``."""
        ents, offs = [], []
        qpos = np.arange(len(query), dtype=np.int64)
        for band, mask in enumerate(BANDS):
            qv = query & mask
            if self._sorted:
                values, entries, positions = self._sorted[band]
                lo = np.searchsorted(values, qv, "left")
                hi = np.searchsorted(values, qv, "right")
                n = hi - lo
                n[n > self.params.max_bucket] = 0
                if n.sum():
                    idx = np.repeat(lo - np.concatenate([[0], np.cumsum(n)[:-1]]), n) + np.arange(n.sum())
                    ents.append(entries[idx].astype(np.int64))
                    offs.append(positions[idx].astype(np.int64) - np.repeat(qpos, n))
            table = self._recent[band]
            if table:
                for j, v in enumerate(qv.tolist()):
                    hits = table.get(v, ())
                    if 0 < len(hits) <= self.params.max_bucket:
                        ents.append(np.fromiter((e for e, _ in hits), np.int64, len(hits)))
                        offs.append(np.fromiter((p - j for _, p in hits), np.int64, len(hits)))
        if not ents:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(ents), np.concatenate(offs)

    def query(self, fp: np.ndarray) -> Optional[Match]:
        """How much of ``fp`` repeats indexed clips, and the one it repeats most (ties: the earlier indexed),
        or None when less than ``min_match_s`` of it does.

        The repeated share is over every verified (clip, offset) together: a clip of a re-upload is cut
        elsewhere than the clips it repeats, so its audio usually lies over two of them.
        """
        fp = np.asarray(fp, np.uint32)
        p = self.params
        if len(fp) == 0 or not self.keys:
            return None
        ents, offs = self._hits(fp)
        if not len(ents):
            return None
        pairs = ents * (1 << 32) + (offs + (1 << 31))
        uniq, counts = np.unique(pairs, return_counts=True)
        keep = counts >= p.min_votes
        uniq, counts = uniq[keep], counts[keep]
        best, rank = None, None
        errors = np.full(len(fp), 33, np.int32)  # the fewest bit errors of each item over the matches
        for i in np.lexsort((uniq, -counts))[:p.candidates]:
            entry, offset = int(uniq[i] >> 32), int(uniq[i] & 0xFFFFFFFF) - (1 << 31)
            e = matched_items(fp, self.fps[entry], offset, p)
            good = e >= 0
            n = int(good.sum())
            errors[good] = np.minimum(errors[good], e[good])
            if n and (rank is None or (n, -entry) > rank):
                best, rank = (entry, offset), (n, -entry)
        covered = errors <= 32
        n = int(covered.sum())
        if best is None or n * ITEM_S < p.min_match_s:
            return None
        ber = float(errors[covered].sum() / (32.0 * n))
        return Match(self.keys[best[0]], best[1] * ITEM_S, n * ITEM_S, n / len(fp), ber)
