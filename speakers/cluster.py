"""Speaker ids: decide each source's voices, link them across a voice group, pick conditioning clips.

Within a source, clips are grouped into voices by ``voices``: average-linkage clusters are
proposals, and a proposal only stands as a voice of its own when it holds
``min_voice_s`` of speech and its centroid is less alike than ``same_voice_similarity`` to every
other voice — "one voice" wins unless the source shows two clearly (measured on real voices: one
person's recordings score 0.77–0.97 against each other, two people 0.41–0.77).

The voices of one voice group (a channel, feed or uploader; see ``Source.voice_group``) are then
linked source by source, in the order the sources were listed, to the group's speakers: each voice
joins the most similar speaker whose centroid is at least ``link_similarity`` alike (two voices of
one source never join the same speaker), else it starts a new speaker, named after the group and its
first clip's key. Centroids are kept as the corpus stores them (float16) after every source, so a
group committed in one wave or in many gets the same ids: a wave starts from the speakers of the
waves before it exactly as a source starts from the speakers of the sources before it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from schemas.keys import stable_hash


@dataclass(frozen=True)
class ClusterParams:
    same_voice_similarity: float = 0.75  # a source's proposed voices this alike are one voice
    min_voice_s: float = 6.0  # a proposed voice with less speech is folded into its nearest neighbour
    link_similarity: float = 0.83  # a source's voice joins a known speaker this alike
    similar_k: int = 3
    block: int = 2000


@dataclass
class KnownSpeaker:
    speaker_id: str
    centroid: np.ndarray
    n_clips: int


def normalise(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-12)


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0, 1, ... in order of first appearance (deterministic, order-independent ids)."""
    mapping: Dict[int, int] = {}
    return np.array([mapping.setdefault(int(x), len(mapping)) for x in labels], dtype=np.int64)


def cluster_labels(emb: np.ndarray, min_similarity: float, block: int = 2000) -> np.ndarray:
    """Average-linkage clusters of unit vectors, merged while cosine similarity ≥ ``min_similarity``.

    More than ``block`` vectors are clustered block by block (in order), and the blocks' cluster
    centroids are then clustered the same way.
    """
    n = len(emb)
    if n <= 1:
        return np.zeros(n, dtype=np.int64)
    if n > block:
        parts = [(a, min(n, a + block)) for a in range(0, n, block)]
        local = [cluster_labels(emb[a:b], min_similarity, block) for a, b in parts]
        cents = [normalise(emb[a:b][lab == c].mean(0)) for (a, b), lab in zip(parts, local)
                 for c in range(int(lab.max()) + 1)]
        top = cluster_labels(np.stack(cents), min_similarity, block)
        out, base = np.empty(n, dtype=np.int64), 0
        for (a, b), lab in zip(parts, local):
            out[a:b] = top[base + lab]
            base += int(lab.max()) + 1
        return _relabel(out)
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist
    tree = linkage(np.clip(pdist(emb.astype(np.float64), "cosine"), 0.0, 2.0), method="average")
    return _relabel(fcluster(tree, t=1.0 - min_similarity, criterion="distance"))


def voices(vecs: np.ndarray, secs: np.ndarray, same_similarity: float, min_voice_s: float,
           max_voices: int = 8, block: int = 2000) -> np.ndarray:
    """Voice label (0, 1, ... in order of first appearance) of each unit vector of one source.

    The average-linkage tree is cut into 2, 3, ... ``max_voices`` clusters; at each cut, the clusters
    holding ``min_voice_s`` of speech (``secs``) are candidate voices, and candidates whose centroids
    are at least ``same_similarity`` alike are merged. The cut that leaves most voices wins (one
    voice when none leaves two), and every vector goes to its nearest voice. So a few stray seconds
    never make a voice, and neither do two stretches of one person.
    """
    n = len(vecs)
    if n <= 1:
        return np.zeros(n, dtype=np.int64)
    if n > block:  # very long sources: the tree of a block's worth of evenly spread vectors
        pick = np.linspace(0, n - 1, block).round().astype(int)
        lab = voices(vecs[pick], secs[pick] * (n / block), same_similarity, min_voice_s, max_voices, block)
        cents = normalise(np.stack([vecs[pick][lab == k].mean(0) for k in range(int(lab.max()) + 1)]))
        return _relabel(np.argmax(vecs @ cents.T, axis=1))
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist
    tree = linkage(np.clip(pdist(vecs.astype(np.float64), "cosine"), 0.0, 2.0), method="average")
    best = normalise(vecs.mean(0, keepdims=True))
    for k in range(2, min(max_voices, n) + 1):
        lab = fcluster(tree, t=k, criterion="maxclust")
        big = [c for c in sorted(set(lab.tolist())) if secs[lab == c].sum() >= min_voice_s]
        if len(big) < 2:
            continue
        cents = [normalise((vecs[lab == c] * secs[lab == c, None]).sum(0)) for c in big]
        while len(cents) > 1:  # merge the most alike pair while it is one voice
            sims = np.stack(cents) @ np.stack(cents).T
            np.fill_diagonal(sims, -np.inf)
            i, j = np.unravel_index(int(np.argmax(sims)), sims.shape)
            if sims[i, j] < same_similarity:
                break
            cents[min(i, j)] = normalise(cents[i] + cents[j])
            del cents[max(i, j)]
        if len(cents) > len(best):
            best = np.stack(cents)
    return _relabel(np.argmax(vecs @ best.T, axis=1))


def new_speaker_id(group: str, first_key: str) -> str:
    return "spk-" + stable_hash(f"{group}|{first_key}", 16)


def listing_order(origin: str) -> tuple:
    """Sort key of a source's ``origin`` ("sources.txt:12 > 3") in the order its lines were listed."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", origin or ""))


def stored(v: np.ndarray) -> np.ndarray:
    """A centroid as the corpus stores it (float16), so later waves start from the same numbers."""
    return normalise(np.asarray(v, np.float32)).astype(np.float16).astype(np.float32)


def assign(group: str, keys: Sequence[str], sources: Sequence[str], emb: np.ndarray, known: Sequence[KnownSpeaker],
           params: ClusterParams = ClusterParams(), order: Optional[Sequence[tuple]] = None,
           secs: Optional[Sequence[float]] = None,
           source_voice: Optional[Sequence[Optional[int]]] = None) -> Tuple[List[str], List[KnownSpeaker]]:
    """Speaker id for each clip of one voice group (clips in key order), and the group's speakers after it.

    ``order`` gives each clip's source a place in the listing (``listing_order``; default: source
    id), ``secs`` each clip's length (default 1). ``emb`` rows may be NaN for clips without an
    embedding: they join their source's largest voice. ``source_voice`` is each clip's voice within its
    source as the speaker stage found them (None: not known): a source all of whose clips carry one
    keeps those voices here (the stage decided on every utterance of the source; its kept clips alone,
    a few in a short file, can split one lively voice, or fold a voice whose turns were mostly cut
    away into another).
    """
    n = len(keys)
    have = ~np.isnan(emb).any(axis=1) if n else np.zeros(0, bool)
    secs_a = np.ones(n) if secs is None else np.asarray(secs, np.float64)
    place = {}
    for i in range(n):
        place.setdefault(sources[i], (order[i] if order is not None else (), sources[i]))
    speakers = {k.speaker_id: KnownSpeaker(k.speaker_id, stored(k.centroid), k.n_clips) for k in known}
    touched: List[str] = []
    ids: List[Optional[str]] = [None] * n
    for sid in sorted(place, key=lambda s: place[s]):
        idx = [i for i in range(n) if sources[i] == sid]
        with_emb = [i for i in idx if have[i]]
        if not with_emb:  # a source with no embedding at all: one speaker of its own
            new = new_speaker_id(group, keys[min(idx)])
            for i in idx:
                ids[i] = new
            continue
        vecs = normalise(emb[with_emb])
        if source_voice is not None and all(source_voice[i] is not None for i in with_emb):
            lab = _relabel(np.array([source_voice[i] for i in with_emb], dtype=np.int64))
        else:
            lab = voices(vecs, secs_a[with_emb], params.same_voice_similarity, params.min_voice_s, block=params.block)
        members = [[with_emb[j] for j in range(len(with_emb)) if lab[j] == c] for c in range(int(lab.max()) + 1)]
        largest = max(range(len(members)), key=lambda c: (len(members[c]), -c))
        cents = [normalise(emb[m].mean(0)) for m in members]
        # link: the most similar (voice, speaker) pairs first, one speaker per voice of the source
        pairs = sorted(((float(cents[c] @ sp.centroid), c, sp.speaker_id) for c in range(len(members))
                        for sp in speakers.values()), key=lambda p: (-p[0], p[1], p[2]))
        chosen: Dict[int, str] = {}
        for sim, c, spk in pairs:
            if sim < params.link_similarity:
                break
            if c not in chosen and spk not in chosen.values():
                chosen[c] = spk
        for c, m in enumerate(members):
            spk = chosen.get(c) or new_speaker_id(group, keys[min(m)])
            old = speakers.get(spk)
            total = emb[m].sum(0) + (old.centroid * old.n_clips if old else 0.0)
            speakers[spk] = KnownSpeaker(spk, stored(total), len(m) + (old.n_clips if old else 0))
            touched.append(spk)
            for i in m + ([i for i in idx if not have[i]] if c == largest else []):
                ids[i] = spk
    out = [speakers[s] for s in sorted(set(touched))]
    return [str(x) for x in ids], out


def similar_keys(keys: Sequence[str], speaker_ids: Sequence[str], emb: np.ndarray, k: int = 3,
                 block: int = 2000) -> List[Tuple[str, ...]]:
    """For each clip, up to ``k`` other clips of the same speaker, most similar voice first."""
    out: List[Tuple[str, ...]] = [()] * len(keys)
    if k <= 0:
        return out
    by_speaker: Dict[str, List[int]] = {}
    for i, s in enumerate(speaker_ids):
        if not np.isnan(emb[i]).any():
            by_speaker.setdefault(s, []).append(i)
    for idx in by_speaker.values():
        for a in range(0, len(idx), block):
            part = idx[a:a + block]
            v = normalise(emb[part])
            sims = v @ v.T
            np.fill_diagonal(sims, -np.inf)
            order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
            for row, i in enumerate(part):
                out[i] = tuple(keys[part[j]] for j in order[row] if np.isfinite(sims[row, j]))
    return out
