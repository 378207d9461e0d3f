"""Near-duplicate transcripts with MinHash/LSH (datasketch): the same script read again, by anyone.

A transcript is its set of word bigrams after lower-casing and dropping punctuation; two are
near-duplicates when the Jaccard similarity of those sets is at least ``threshold`` (LSH finds the
candidates, the exact Jaccard decides). Transcripts under ``min_words`` words are never compared:
"thank you" in a thousand voices is no duplicate.
"""
from __future__ import annotations

import re
from typing import Dict, FrozenSet, List, Optional, Tuple

NUM_PERM = 64
SEED = 1  # fixed: the same text always hashes the same
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)


def shingles(text: str) -> FrozenSet[str]:
    words = _WORD.findall((text or "").lower())
    if len(words) < 2:
        return frozenset(words)
    return frozenset(f"{a} {b}" for a, b in zip(words, words[1:]))


def n_words(text: str) -> int:
    return len(_WORD.findall(text or ""))


def jaccard(a: FrozenSet[str], b: FrozenSet[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


class TextIndex:
    """Transcripts searchable by near-duplicate text; a query may be limited to one speaker's."""

    def __init__(self, threshold: float = 0.7, min_words: int = 6):
        self.threshold, self.min_words = threshold, min_words
        from datasketch import MinHashLSH  # here: datasketch's import costs most of a second, needed only to dedup
        self._lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
        self._items: Dict[str, Tuple[FrozenSet[str], Optional[str], int]] = {}  # key → (shingles, speaker, order)

    def _minhash(self, sh: FrozenSet[str]) -> "MinHash":  # noqa: F821
        from datasketch import MinHash
        m = MinHash(num_perm=NUM_PERM, seed=SEED)
        m.update_batch([s.encode() for s in sorted(sh)])
        return m

    def add(self, key: str, text: str, speaker: Optional[str] = None) -> None:
        if n_words(text) < self.min_words or key in self._items:
            return
        sh = shingles(text)
        self._items[key] = (sh, speaker, len(self._items))
        self._lsh.insert(key, self._minhash(sh))

    def query(self, text: str, speaker: Optional[str] = None, same_speaker: bool = False
              ) -> Optional[Tuple[str, float]]:
        """(the earliest-added key whose text this repeats, similarity), or None."""
        if n_words(text) < self.min_words or not self._items:
            return None
        sh = shingles(text)
        found: List[Tuple[int, str, float]] = []
        for key in self._lsh.query(self._minhash(sh)):
            other, who, order = self._items[key]
            if same_speaker and who != speaker:
                continue
            j = jaccard(sh, other)
            if j >= self.threshold:
                found.append((order, key, j))
        if not found:
            return None
        _, key, j = min(found)
        return key, j
