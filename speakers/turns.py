"""One voice per clip: find speaker changes inside clips and cut at the pause between the turns.

A clip from the splitter is a stretch of speech between long pauses; in an interview or a fast
exchange it can hold both voices, turns separated only by the short pauses the splitter does not
cut at. Each clip is divided at its short pauses (≥ ``min_pause_s`` of quiet or non-speech frames)
into utterances; every utterance long enough to be recognised (≥ ``min_utterance_s``) gets a voice
embedding (the mean of its 1.6 s partials, see ``speakers.encoder``), and so does every group of
shorter ones joined across their shortest pauses (``units``): quiet or fast speech that its pauses
cut into pieces under a second is still heard.

A change of voice needs evidence, because one real person varies a lot from second to second
(measured on real voices: 3 s of one person score 0.71–0.91 against another 3 s of that person,
and 0.40–0.71 against another person). So:

1. How many voices a source holds is decided first, over all its utterances
   (``speakers.cluster.voices``): clusters whose centroids are as alike as one person's are one
   voice, and a "voice" with under ``min_voice_s`` of speech is folded into its neighbour. A source
   of one voice is never cut.
2. In a source of several voices, each utterance is labelled with the nearest voice, and is
   evidence for it only when it is nearer by ``change_margin``. A clip is cut only between two runs
   of utterances that each hold ``change_evidence_s`` of such evidence; weaker runs join their
   stronger neighbour, but beside a mixed utterance or the clip's edge they are cut out (there they
   are more often the other voice's start or tail). The cut goes at the pause between the two runs;
   pieces too short to embed between them are neither's, and are cut out.
3. In a source of several voices, an utterance whose own 1.6 s partials are nearest to different
   voices (two voices with no pause between them: an overlap or an interruption) cannot be cut
   cleanly: it becomes a turn of its own, marked ``mixed`` (the segment stage rejects it as
   ``multi_speaker``). So does an utterance of ``min_edge_s`` or more at the edge of a group of
   short ones that is nearer another voice than its group's (the tail of the previous speaker after
   a short gap, a short reply).
4. Where two voices meet with less than ``change_pause_s`` of quiet between their turns, each turn
   gives up ``change_guard_s`` beside the change (``speakers.guard``).

Each turn also gets a ``voice_change_score``: the largest distance (1 − cosine) between the voices
on the two sides of one of its inner pauses, a measure of how likely an uncut change is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

import numpy as np

from audio.silence import Piece
from speakers import encoder
from speakers.cluster import normalise, voices
from speakers.guard import guard_changes

SCORE_WINDOW_S = 2.0  # speech each side of a pause that voice_change_score compares


@dataclass(frozen=True)
class TurnParams:
    min_pause_s: float = 0.15
    min_utterance_s: float = 1.0
    same_voice_similarity: float = 0.75  # proposed voices whose centroids are this alike are one voice
    min_voice_s: float = 6.0  # a voice with less speech than this is folded into its nearest neighbour
    change_margin: float = 0.05  # an utterance is evidence for its voice when nearer to it by this much
    change_evidence_s: float = 1.0  # each side of a change needs this much evidence in a row
    min_edge_s: float = 0.5  # an utterance at a unit's edge this long is checked for another voice
    change_pause_s: float = 1.0  # a change of voice with less quiet than this between the turns has no clean cut
    change_guard_s: float = 1.0  # ... and each turn gives up this much beside it
    device: str = "cpu"
    precision: str = "auto"  # the voice encoder's (speakers.encoder.resolve_precision)



@dataclass
class Turn:
    start: int  # frame (10 ms grid), inclusive
    end: int  # exclusive
    embedding: Optional[np.ndarray]  # None when no utterance in it was long enough
    mixed: bool = False
    voice_change_score: Optional[float] = None  # largest voice distance across an inner pause; None: nothing to compare
    voice: Optional[int] = None  # which of the source's voices (split_turns; None: mixed or not heard)


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


def units(utts: List[Tuple[int, int, int]], min_f: int) -> List[Tuple[int, int, int]]:
    """The stretches a clip's voices are judged on: each utterance of at least ``min_f`` frames on its
    own, and runs of shorter ones joined, across the shorter pause beside each, until every group is
    that long (or its run ends). Quiet or fast speech whose short pauses cut it into pieces under a
    second is then still heard as a voice; a group that spans a change of voice has partials that
    disagree, or an edge nearer the other voice (``_split_edges``)."""
    out = [[s, e, g, e - s < min_f] for s, e, g in utts]  # [start, end, pause before, made of short ones]
    while True:
        pick = None
        for i, (s, e, _, short) in enumerate(out):
            if not short or e - s >= min_f:
                continue
            nbrs = [j for j in (i - 1, i + 1) if 0 <= j < len(out) and out[j][3]]
            if nbrs:
                j = min(nbrs, key=lambda k: (out[max(i, k)][2], k))  # across the shorter pause
                if pick is None or (e - s, i) < pick[0]:
                    pick = ((e - s, i), i, j)
        if pick is None:
            break
        _, i, j = pick
        lo, hi = min(i, j), max(i, j)
        out[lo:hi + 1] = [[out[lo][0], out[hi][1], out[lo][2], True]]
    return [(s, e, g) for s, e, g, _ in out]


def split_turns(clips: Sequence[Tuple[int, int]], pause: np.ndarray, hop_s: float,
                audio: Callable[[int, int], np.ndarray], params: TurnParams = TurnParams(),
                rate: int = encoder.RATE) -> Tuple[List[List[Turn]], int]:
    """For each clip (frame range), its turns: one voice each, with the turn's voice embedding; and
    how many voices the source holds.

    ``audio(start_frame, end_frame)`` returns that stretch as float32 at ``rate`` (the encoder
    resamples it to its own). All partials of all clips are embedded in batches.
    """
    min_pause_f = max(1, int(round(params.min_pause_s / hop_s)))
    min_utt_f = int(round(params.min_utterance_s / hop_s))
    plans, pieces, owners, by_utt = [], [], [], {}

    def flush():  # embed what is pending: only embeddings are kept, so memory does not grow with the source
        for (c, u), v in zip(owners, encoder.embed_partials(pieces, params.device, precision=params.precision)):
            by_utt.setdefault((c, u), []).append(v)
        pieces.clear()
        owners.clear()
    parts = []  # the utterances of each clip's units
    for c, (a, b) in enumerate(clips):
        small = utterances(a, b, pause, min_pause_f)
        utts = units(small, min_utt_f)
        plans.append(utts)
        parts.append([[x for x in small if s <= x[0] and x[1] <= e] for s, e, _ in utts])
        for u, (s, e, _) in enumerate(utts):
            if e - s >= min_utt_f:
                for p in encoder.partials(audio(s, e), rate):
                    pieces.append(p)
                    owners.append((c, u))
        if len(pieces) >= encoder.BATCH:
            flush()
    flush()
    by_utt = {k: np.stack(v) for k, v in by_utt.items()}
    cents = _source_voices(plans, parts, by_utt, hop_s, min_utt_f, params)
    clean = {(c, u) for c, u in by_utt if any(e - s >= min_utt_f for s, e, _ in parts[c][u])}
    foreign: set = set()
    if len(cents) >= 2:
        _embed_tails(plans, by_utt, audio, rate, hop_s, params)
        plans, by_utt, foreign, clean = _split_edges(plans, parts, by_utt, clean, cents, audio, rate, hop_s, params)
    turns = [_turns(utts, by_utt, cents, c, hop_s, params, foreign, clean) for c, utts in enumerate(plans)]
    for t in (t for ts in turns for t in ts):
        if not t.mixed and t.embedding is not None:
            t.voice = int(np.argmax(cents @ t.embedding))
    return guard_changes(turns, len(cents), pause, hop_s, params.change_pause_s, params.change_guard_s), len(cents)


def _embed_tails(plans, by_utt, audio, rate: int, hop_s: float, params: TurnParams) -> None:
    """In a source of several voices, add to each unit the 1.6 s partial that ends where it ends,
    where its own partials leave its last moments out (``encoder.partials`` drops a last piece under
    0.8 s): a voice that starts there without a pause is otherwise never heard."""
    part_f = int(round(encoder.PARTIAL_S / hop_s))
    asks = [(c, u, e) for c, utts in enumerate(plans) for u, (s, e, _) in enumerate(utts)
            if (c, u) in by_utt and e - s > part_f and 0 < (e - s) % part_f < part_f // 2]
    if not asks:
        return
    vecs = encoder.embed_partials([encoder.partials(audio(e - part_f, e), rate)[0] for _, _, e in asks], params.device,
                                  precision=params.precision)
    for (c, u, _), v in zip(asks, vecs):
        by_utt[(c, u)] = np.concatenate([by_utt[(c, u)], v[None]])


def _split_edges(plans, parts, by_utt, clean, cents: np.ndarray, audio, rate: int, hop_s: float,
                 params: TurnParams):
    """Groups of short utterances whose first or last utterance (at least ``min_edge_s``) is nearer
    another voice than the group's own: that utterance split off as a unit of its own, marked foreign
    (a short turn of the other voice, or its tail after a short gap: cut out, never kept). Nearer by
    any margin, as one short piece is never a clear match: in conversations this costs 0.5 % of the
    speech, and in a source of one voice it never runs."""
    min_f, max_f = int(round(params.min_edge_s / hop_s)), int(round(params.min_utterance_s / hop_s))
    asks = []  # (clip, unit, which edge, utterance)
    for c, utts in enumerate(plans):
        for u in range(len(utts)):
            if (c, u) not in by_utt or len(parts[c][u]) < 2:
                continue
            for side, x in ((0, parts[c][u][0]), (1, parts[c][u][-1])):
                if min_f <= x[1] - x[0] < max_f:
                    asks.append((c, u, side, x))
    if not asks:
        return plans, by_utt, set(), clean
    vecs = encoder.embed_partials([encoder.partials(audio(x[0], x[1]), rate)[0] for *_, x in asks], params.device,
                                  precision=params.precision)
    cut: Dict[Tuple[int, int], Dict[int, Tuple[tuple, np.ndarray]]] = {}
    for (c, u, side, x), v in zip(asks, vecs):
        own = _evidence(normalise(by_utt[(c, u)].mean(0)), cents, 0.0)[0]
        if _evidence(v, cents, 0.0)[0] != own:
            cut.setdefault((c, u), {})[side] = (x, v)
    new_plans, new_by, foreign, new_clean = [], {}, set(), set()
    for c, utts in enumerate(plans):
        out = []
        for u, (s, e, g) in enumerate(utts):
            edges = cut.get((c, u), {})
            if 0 in edges:
                (xs, xe, xg), v = edges[0]
                foreign.add((c, len(out)))
                new_by[(c, len(out))] = v[None]
                out.append((xs, xe, g))
                s, g = xe, 0
            tail = edges.get(1)
            if tail and tail[0][0] > s:
                e_own = tail[0][0]
            else:
                tail, e_own = None, e
            if e_own > s:
                if (c, u) in by_utt:
                    new_by[(c, len(out))] = by_utt[(c, u)]
                    if (c, u) in clean:
                        new_clean.add((c, len(out)))
                out.append((s, e_own, g))
            if tail:
                foreign.add((c, len(out)))
                new_by[(c, len(out))] = tail[1][None]
                out.append((tail[0][0], e, 0))
        new_plans.append(out)
    return new_plans, new_by, foreign, new_clean


def _source_voices(plans, parts, by_utt, hop_s: float, min_utt_f: int, params: TurnParams) -> np.ndarray:
    """Centroids of the voices the source holds (one row when it holds one, none without speech).

    Decided over the units holding an utterance long enough on its own (fewer but cleaner voices)
    and over all units (which also hear a voice that speaks only in short pieces); the answer with
    more voices wins, so neither can make one voice out of two the other tells apart. When both
    find one voice, the 1.6 s partials are asked one by one: where two people overlap there is no
    pause to cut at, every utterance holds both and their means blend into one voice, while most
    partials hold one voice each. (Asked always, the partials that straddle the overlaps can make
    a third voice of their own.)"""
    ids = sorted(by_utt)
    if not ids:
        return np.zeros((0, 256), np.float32)
    vecs = normalise(np.stack([encoder.mean_embedding(by_utt[i]) for i in ids]))
    secs = np.array([(plans[c][u][1] - plans[c][u][0]) * hop_s for c, u in ids])
    best = None
    for keep in (np.array([any(e - s >= min_utt_f for s, e, _ in parts[c][u]) for c, u in ids]),
                 np.ones(len(ids), bool)):
        if keep.any():
            cents = _centroids(vecs[keep], secs[keep], params)
            if best is None or len(cents) > len(best):
                best = cents
    if len(best) < 2:
        pv = normalise(np.concatenate([by_utt[i] for i in ids]))
        cents = _centroids(pv, np.full(len(pv), encoder.PARTIAL_S), params)
        if len(cents) > len(best):
            best = cents
    return best


def _centroids(vecs: np.ndarray, secs: np.ndarray, params: TurnParams) -> np.ndarray:
    """Centroids (weighted by seconds) of the voices ``speakers.cluster.voices`` finds among ``vecs``."""
    lab = voices(vecs, secs, params.same_voice_similarity, params.min_voice_s)
    return normalise(np.stack([(vecs[lab == k] * secs[lab == k, None]).sum(0) for k in range(int(lab.max()) + 1)]))


def _evidence(vecs: np.ndarray, cents: np.ndarray, margin: float) -> Tuple[int, bool]:
    """(nearest voice, whether it is nearer than the next by ``margin``) of one embedding."""
    sims = cents @ vecs
    order = np.argsort(-sims, kind="stable")
    return int(order[0]), bool(len(order) < 2 or sims[order[0]] - sims[order[1]] >= margin)


def _turns(utts, by_utt: Dict, cents: np.ndarray, c: int, hop_s: float, params: TurnParams,
           foreign=frozenset(), clean=None) -> List[Turn]:
    """Turns of one clip (see the module's doc)."""
    emb = [u for u in range(len(utts)) if (c, u) in by_utt]
    if len(cents) < 2 or not emb:
        return [_turn(utts, by_utt, c, 0, len(utts), hop_s, params, clean)]
    # runs: [label, first utterance, last utterance, evidence seconds]; mixed utterances stand alone
    runs: List[list] = []
    for u in emb:
        vecs = by_utt[(c, u)]
        if (c, u) in foreign or len({_evidence(v, cents, 0.0)[0] for v in vecs}) > 1:
            runs.append([-1, u, u, np.inf])
            continue
        lab, ok = _evidence(normalise(vecs.mean(0)), cents, params.change_margin)
        secs = (utts[u][1] - utts[u][0]) * hop_s if ok else 0.0
        if runs and runs[-1][0] == lab:
            runs[-1][2], runs[-1][3] = u, runs[-1][3] + secs
        else:
            runs.append([lab, u, u, secs])
    while True:  # fold the weakest run without enough evidence into its stronger neighbour
        weak = [i for i, r in enumerate(runs) if r[3] < params.change_evidence_s and r[0] >= 0]
        if len(runs) < 2 or not weak:
            break
        i = min(weak, key=lambda k: (runs[k][3], k))
        nbrs = [j for j in (i - 1, i + 1) if 0 <= j < len(runs) and runs[j][0] >= 0]
        if not nbrs:
            if all(r[0] >= 0 for r in runs):
                break
            runs[i][3] = np.inf  # between two mixed utterances: stands as it is
            continue
        if len(nbrs) == 1:
            # beside a mixed utterance or the clip's edge, next to another voice: where one turn meets
            # the next, weak evidence is more often the other voice's start or tail than a wobble
            runs[i][0], runs[i][3] = -1, np.inf
            continue
        j = max(nbrs, key=lambda k: (runs[k][3], -k))
        a, b = min(i, j), max(i, j)
        runs[a:b + 1] = [[runs[j][0], runs[a][1], runs[b][2], runs[a][3] + runs[b][3]]]
        if a > 0 and runs[a - 1][0] == runs[a][0] >= 0:
            runs[a - 1:a + 1] = [[runs[a][0], runs[a - 1][1], runs[a][2], runs[a - 1][3] + runs[a][3]]]
        elif a + 1 < len(runs) and runs[a + 1][0] == runs[a][0] >= 0:
            runs[a:a + 2] = [[runs[a][0], runs[a][1], runs[a + 1][2], runs[a][3] + runs[a + 1][3]]]
    # boundaries: a mixed utterance is cut out at its own edges; between two voices, at the pause between
    # them, or, where pieces too short to be heard lie between them, around those pieces (they are neither's)
    bounds, unheard = [0], set()
    for r0, r1 in zip(runs, runs[1:]):
        if r0[0] < 0 or r1[0] < 0:
            bounds.append(r1[1] if r1[0] < 0 else r0[2] + 1)
        elif r1[1] > r0[2] + 1:
            bounds += [r0[2] + 1, r1[1]]
            unheard.add((r0[2] + 1, r1[1]))
        else:
            bounds.append(r1[1])
    bounds.append(len(utts))
    mixed_at = {(r[1], r[2] + 1) for r in runs if r[0] < 0}
    bounds += [u for span in mixed_at for u in span]  # alone, without the unembedded pieces beside them
    for r0, r1 in zip(runs, runs[1:]):  # the utterances either side of a change: any partial of the other voice?
        if r0[0] < 0 or r1[0] < 0:
            continue
        for u, own, other in ((r0[2], r0[0], r1[0]), (r1[1], r1[0], r0[0])):
            if (cents[other] @ by_utt[(c, u)].T > cents[own] @ by_utt[(c, u)].T).any():
                mixed_at.add((u, u + 1))
                bounds += [u, u + 1]
    bounds = sorted(set(bounds))
    out = []
    for a, b in zip(bounds, bounds[1:]):
        if b > a:
            t = _turn(utts, by_utt, c, a, b, hop_s, params, clean)
            t.mixed = (a, b) in mixed_at or (a, b) in unheard
            out.append(t)
    return out


def _turn(utts, by_utt: Dict, c: int, a: int, b: int, hop_s: float, params: TurnParams, clean=None) -> Turn:
    """The turn of units a..b-1: its voice embedding (of its units that hold an utterance long enough
    on its own, when it has any: short pieces, padded to a partial's length, blur a voice) and its
    voice change score."""
    vecs = [by_utt[(c, u)] for u in range(a, b) if (c, u) in by_utt and (clean is None or (c, u) in clean)] \
        or [by_utt[(c, u)] for u in range(a, b) if (c, u) in by_utt]
    emb = encoder.mean_embedding(np.concatenate(vecs)) if vecs else None
    return Turn(utts[a][0], utts[b - 1][1], emb, False, _change_score(utts, by_utt, c, a, b, hop_s, params))


def _change_score(utts, by_utt: Dict, c: int, a: int, b: int, hop_s: float, params: TurnParams) -> Optional[float]:
    """Largest 1 − cosine between the voices of up to ``SCORE_WINDOW_S`` of speech on each side of
    an inner pause of utterances a..b-1 (None when no pause has recognisable speech on both sides)."""
    have = [u for u in range(a, b) if (c, u) in by_utt]
    if len(have) < 2:
        return None
    best = 0.0
    for k in range(1, len(have)):
        left, right, t = [], [], 0.0
        for u in reversed(have[:k]):
            left.append(by_utt[(c, u)])
            t += (utts[u][1] - utts[u][0]) * hop_s
            if t >= SCORE_WINDOW_S:
                break
        t = 0.0
        for u in have[k:]:
            right.append(by_utt[(c, u)])
            t += (utts[u][1] - utts[u][0]) * hop_s
            if t >= SCORE_WINDOW_S:
                break
        sim = float(encoder.mean_embedding(np.concatenate(left)) @ encoder.mean_embedding(np.concatenate(right)))
        best = max(best, 1.0 - sim)
    return round(best, 4)


def embedding_bytes(v: Optional[np.ndarray]) -> Optional[bytes]:
    """A voice embedding as 512 bytes of float16 (what records carry and the manifest keeps)."""
    return None if v is None else np.asarray(v, dtype=np.float16).tobytes()


def embedding_of(b: Optional[bytes]) -> Optional[np.ndarray]:
    return None if b is None else np.frombuffer(b, dtype=np.float16).astype(np.float32)


class VoiceCuts(NamedTuple):
    clips: List[Piece]  # one voice each (or mixed)
    embeddings: List[Optional[np.ndarray]]  # each clip's voice embedding
    changes: List[Optional[float]]  # each clip's voice change score
    voices: List[Optional[int]]  # which of the source's voices each clip holds (None: mixed or not heard)
    mixed: Set[int]  # indices of clips that hold two voices (rejected as multi_speaker)
    dropped: List[Tuple[Piece, str, str]]  # (piece, reason, why) of turns too short to keep
    n_voices: Optional[int]  # voices the source holds (None: not asked)


def one_voice_each(clips: Sequence[Piece], pause: np.ndarray, hop: int, rate: int,
                   read: Callable[[int, int], np.ndarray], params: TurnParams, min_clip_s: float) -> VoiceCuts:
    """Clips cut at speaker changes. ``read(start, end)``: float32 samples at ``rate``, ``hop`` samples
    to a frame."""
    hop_s = hop / rate
    turns, n_voices = split_turns([(c.start, c.end) for c in clips], pause, hop_s,
                                  lambda s, e: read(s * hop, e * hop), params, rate)
    cuts = VoiceCuts([], [], [], [], set(), [], n_voices)
    min_f = int(round(min_clip_s / hop_s))
    for clip_turns in turns:
        for t in clip_turns:
            piece = Piece(t.start, t.end)
            if t.end - t.start < min_f and len(clip_turns) > 1:
                secs = (t.end - t.start) * hop_s
                if t.mixed:
                    cuts.dropped.append((piece, "multi_speaker", f"{secs:.2f} s where two voices meet with no pause "
                                                                 f"to cut at"))
                else:
                    cuts.dropped.append((piece, "too_short", f"{secs:.2f} s turn of one voice between another's, "
                                                             f"minimum {min_clip_s:g} s"))
                continue
            if t.mixed:
                cuts.mixed.add(len(cuts.clips))
            cuts.clips.append(piece)
            cuts.embeddings.append(t.embedding)
            cuts.changes.append(t.voice_change_score)
            cuts.voices.append(t.voice)
    return cuts
