"""Word error rate against reference transcripts, after one normalisation of both sides.

Both texts are lower-cased, the spoken forms of common titles substituted (``mr`` → ``mister``
...), hyphens split words, punctuation removed and spaces collapsed (jiwer's transforms), so the
rate counts words, not Whisper's casing and punctuation against a bare reference.
"""
from __future__ import annotations

from typing import Sequence

import jiwer

TITLES = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint"}

NORMALISE = jiwer.Compose([
    jiwer.ToLowerCase(),
    jiwer.SubstituteRegexes({r"[-\u2010-\u2015]": " "}),
    jiwer.RemovePunctuation(),
    jiwer.SubstituteWords(TITLES),
    jiwer.RemoveMultipleSpaces(),
    jiwer.Strip(),
    jiwer.ReduceToListOfListOfWords(),
])


def normalise(text: str) -> str:
    return " ".join(NORMALISE(text)[0])


def corpus_wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Errors over all references' words (not the mean of per-clip rates)."""
    refs = [normalise(r) for r in references]
    hyps = [normalise(h) for h in hypotheses]
    keep = [i for i, r in enumerate(refs) if r]
    return float(jiwer.wer([refs[i] for i in keep], [hyps[i] for i in keep]))
