"""One voice per clip: find speaker changes inside clips and cut at the pause between the turns.

A clip from the splitter is a stretch of speech between long pauses; in an interview or a fast
exchange it can hold both voices, turns separated only by the short pauses the splitter does not
cut at. Each clip is divided at its short pauses (≥ ``min_pause_s`` of quiet or non-speech frames)
into utterances; every utterance long enough to be recognised (≥ ``min_utterance_s``) gets a voice
embedding (the mean of its 1.6 s partials, see ``speakers.encoder``).

One utterance's embedding is too noisy to compare against a fixed threshold (measured: a second of
one voice scores 0.70–0.95 against that voice, and a second of another voice up to 0.78). So the
utterances of the whole source are clustered together (average linkage at ``voice_similarity``,
clusters with under ``min_voice_s`` of speech folded into their nearest neighbour) and each is
labelled with the voice whose centroid it is closest to: a decision between the source's voices,
not against a threshold. Walking through a clip, an utterance labelled with another voice starts a
new turn, and the clip is cut in the middle of the pause before it. An utterance whose own
partials disagree (two voices with no pause between them) cannot be cut cleanly: the turn holding
it is rejected as ``multi_speaker``. Short utterances ("yes", "mm-hmm") join the turn they are in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from audio.silence import Piece
from speakers import encoder
from speakers.cluster import cluster_labels, normalise


@dataclass(frozen=True)
class TurnParams:
    min_pause_s: float = 0.15
    min_utterance_s: float = 1.0
    voice_similarity: float = 0.70  # average-linkage cut between a source's voices
    min_voice_s: float = 3.0  # a "voice" with less speech than this is folded into its nearest neighbour
    within_similarity: float = 0.50  # consecutive partials of one utterance below this: two voices
    device: str = "cpu"


@dataclass
class Turn:
    start: int  # frame (10 ms grid), inclusive
    end: int  # exclusive
    embedding: Optional[np.ndarray]  # None when no utterance in it was long enough
    mixed: bool = False


def _runs(mask: np.ndarray) -> List[Tuple[int, int]]:
    if not len(mask):
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def utterances(start: int, end: int, pause: np.ndarray, min_pause_f: int) -> List[Tuple[int, int, int]]:
    """(start, end, length of the pause before it) of the stretches between pauses of at least
    ``min_pause_f`` frames inside a clip; the boundaries sit in the middle of the pauses."""
    cuts = [(start + a, start + b) for a, b in _runs(pause[start:end])
            if b - a >= min_pause_f and a > 0 and b < end - start]
    bounds = [start] + [(a + b) // 2 for a, b in cuts] + [end]
    gaps = [0] + [b - a for a, b in cuts]
    return [(bounds[i], bounds[i + 1], gaps[i]) for i in range(len(bounds) - 1) if bounds[i + 1] > bounds[i]]


def split_turns(clips: Sequence[Tuple[int, int]], pause: np.ndarray, hop_s: float,
                audio: Callable[[int, int], np.ndarray], params: TurnParams = TurnParams(),
                rate: int = encoder.RATE) -> List[List[Turn]]:
    """For each clip (frame range), its turns: one voice each, with the turn's voice embedding.

    ``audio(start_frame, end_frame)`` returns that stretch as float32 at ``rate`` (the encoder
    resamples it to its own). Partials of many clips are embedded in one batched pass.
    """
    min_pause_f = max(1, int(round(params.min_pause_s / hop_s)))
    min_utt_f = int(round(params.min_utterance_s / hop_s))
    plans, pieces, owners, by_utt = [], [], [], {}

    def flush():  # embed what is pending: only embeddings are kept, so memory does not grow with the source
        for (c, u), v in zip(owners, encoder.embed_partials(pieces, params.device)):
            by_utt.setdefault((c, u), []).append(v)
        pieces.clear()
        owners.clear()
    for c, (a, b) in enumerate(clips):
        utts = utterances(a, b, pause, min_pause_f)
        plans.append(utts)
        for u, (s, e, _) in enumerate(utts):
            if e - s >= min_utt_f:
                for p in encoder.partials(audio(s, e), rate):
                    pieces.append(p)
                    owners.append((c, u))
        if len(pieces) >= 64:
            flush()
    flush()
    labels = _voices(plans, by_utt, hop_s, params)
    return [_turns(utts, by_utt, labels, c, params) for c, utts in enumerate(plans)]


def _voices(plans, by_utt, hop_s: float, params: TurnParams):
    """A voice label for every embedded utterance of the source: clusters, then nearest centroid."""
    ids = sorted(by_utt)
    if not ids:
        return {}
    vecs = normalise(np.stack([encoder.mean_embedding(np.stack(by_utt[i])) for i in ids]))
    secs = np.array([(plans[c][u][1] - plans[c][u][0]) * hop_s for c, u in ids])
    lab = cluster_labels(vecs, params.voice_similarity)
    big = [k for k in range(int(lab.max()) + 1) if secs[lab == k].sum() >= params.min_voice_s]
    if not big:  # too little speech to tell voices apart: one voice
        return {i: 0 for i in ids}
    cents = normalise(np.stack([(vecs[lab == k] * secs[lab == k, None]).sum(0) for k in big]))
    nearest = np.argmax(vecs @ cents.T, axis=1)
    return {i: int(big[n]) for i, n in zip(ids, nearest)}


def _turns(utts, by_utt, labels, c: int, params: TurnParams) -> List[Turn]:
    """Turns of one clip. At a change of voice, the cut goes at the longest pause between the last
    utterance of the old voice and the first of the new one (short utterances in between, too short
    to recognise, go with the side of the longer pause)."""
    turns: List[Turn] = []
    cur_start, cur_vecs, cur_label, cur_mixed, last = utts[0][0], [], None, False, None
    for u, (s, e, _) in enumerate(utts):
        vecs = by_utt.get((c, u))
        if vecs is None:  # too short to recognise: placed when the next voice is known
            continue
        label = labels[(c, u)]
        mixed = any(float(vecs[i] @ vecs[i + 1]) < params.within_similarity for i in range(len(vecs) - 1))
        if cur_label is not None and label != cur_label:
            cut = max(range(last + 1, u + 1), key=lambda i: (utts[i][2], i))
            turns.append(Turn(cur_start, utts[cut][0], encoder.mean_embedding(np.stack(cur_vecs)), cur_mixed))
            cur_start, cur_vecs, cur_mixed = utts[cut][0], [], False
        cur_label, last = label, u
        cur_vecs += vecs
        cur_mixed = cur_mixed or mixed
    turns.append(Turn(cur_start, utts[-1][1], encoder.mean_embedding(np.stack(cur_vecs)) if cur_vecs else None,
                      cur_mixed))
    return turns


def one_voice_each(clips: Sequence[Piece], pause: np.ndarray, hop: int, rate: int,
                   read: Callable[[int, int], np.ndarray], params: TurnParams, min_clip_s: float):
    """Clips cut at speaker changes: (pieces, their voice embeddings, indices of mixed pieces, and
    (piece, why) of turns too short to keep). ``read(start, end)``: float32 samples at ``rate``,
    ``hop`` samples to a frame."""
    hop_s = hop / rate
    turns = split_turns([(c.start, c.end) for c in clips], pause, hop_s,
                        lambda s, e: read(s * hop, e * hop), params, rate)
    out, voices, mixed, short = [], [], set(), []
    min_f = int(round(min_clip_s / hop_s))
    for clip_turns in turns:
        for t in clip_turns:
            piece = Piece(t.start, t.end)
            if t.end - t.start < min_f and len(clip_turns) > 1:
                short.append((piece, f"{(t.end - t.start) * hop_s:.2f} s turn of one voice between "
                                     f"another's, minimum {min_clip_s:g} s"))
                continue
            if t.mixed:
                mixed.add(len(out))
            out.append(piece)
            voices.append(t.embedding)
    return out, voices, mixed, short


def embedding_bytes(v: Optional[np.ndarray]) -> Optional[bytes]:
    """A voice embedding as 512 bytes of float16 (what records carry and the manifest keeps)."""
    return None if v is None else np.asarray(v, dtype=np.float16).tobytes()


def embedding_of(b: Optional[bytes]) -> Optional[np.ndarray]:
    return None if b is None else np.frombuffer(b, dtype=np.float16).astype(np.float32)
