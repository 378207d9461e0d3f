"""Speaker ids: cluster a source's clips by voice, link the clusters across a channel, pick conditioning clips.

Within a source, clips are clustered by average-linkage agglomeration on cosine distance, stopping
at ``clip_similarity``. The source clusters of one voice group (a channel, feed or uploader; see
``Source.voice_group``) are then linked the same way through their centroids, together with the
speakers the corpus already knows in that group, at ``link_similarity``: a podcast's host, heard in
every episode, is one speaker, and a new episode joins the ids already given. Large sets are
clustered in blocks of ``block`` (in key order) whose clusters are then linked, so 100,000 clips
of one channel cost blocks of 2,000² comparisons, not 100,000².

Ids are derived from content: a known speaker keeps its id; a new one is named after its group
and its first clip's key. So the same input gives the same ids on every rerun and worker count.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from schemas.keys import stable_hash


@dataclass(frozen=True)
class ClusterParams:
    clip_similarity: float = 0.78
    link_similarity: float = 0.80
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


def new_speaker_id(group: str, first_key: str) -> str:
    return "spk-" + stable_hash(f"{group}|{first_key}", 16)


def assign(group: str, keys: Sequence[str], sources: Sequence[str], emb: np.ndarray, known: Sequence[KnownSpeaker],
           params: ClusterParams = ClusterParams()) -> Tuple[List[str], List[KnownSpeaker]]:
    """Speaker id for each clip of one voice group (clips in key order), and the group's speakers after it.

    ``emb`` rows may be NaN for clips without an embedding: they join their source's largest cluster.
    """
    n = len(keys)
    have = ~np.isnan(emb).any(axis=1) if n else np.zeros(0, bool)
    # 1. each source's clusters
    clusters: List[Tuple[List[int], np.ndarray]] = []  # (member indices, centroid)
    for sid in sorted(set(sources)):
        idx = [i for i in range(n) if sources[i] == sid]
        with_emb = [i for i in idx if have[i]]
        if not with_emb:
            clusters.append((idx, None))
            continue
        lab = cluster_labels(normalise(emb[with_emb]), params.clip_similarity, params.block)
        members = [[with_emb[j] for j in range(len(with_emb)) if lab[j] == c] for c in range(int(lab.max()) + 1)]
        largest = max(range(len(members)), key=lambda c: (len(members[c]), -c))
        members[largest] += [i for i in idx if not have[i]]
        for m in members:
            ok = [i for i in m if have[i]]
            clusters.append((sorted(m), normalise(emb[ok].mean(0))))
    # 2. link the source clusters with each other and with the speakers already known in the group
    linkable = [c for c in clusters if c[1] is not None]
    items = [k.centroid for k in known] + [c[1] for c in linkable]
    lab = cluster_labels(normalise(np.stack(items)), params.link_similarity, params.block) if items else np.zeros(0, int)
    ids: List[Optional[str]] = [None] * n
    groups: Dict[int, Tuple[List[KnownSpeaker], List[int]]] = {}
    for j, k in enumerate(known):
        groups.setdefault(int(lab[j]), ([], []))[0].append(k)
    for j, (members, _) in enumerate(linkable):
        groups.setdefault(int(lab[len(known) + j]), ([], []))[1].extend(members)
    speakers: List[KnownSpeaker] = []
    for _, (olds, members) in sorted(groups.items()):
        if olds:
            sid = sorted(olds, key=lambda k: (-k.n_clips, k.speaker_id))[0].speaker_id
        elif members:
            sid = new_speaker_id(group, keys[min(members)])
        else:
            continue
        for i in members:
            ids[i] = sid
        vecs = [k.centroid * k.n_clips for k in olds] + [emb[i] for i in members if have[i]]
        count = sum(k.n_clips for k in olds) + sum(1 for i in members if have[i])
        if members:
            speakers.append(KnownSpeaker(sid, normalise(np.sum(vecs, axis=0)), count))
    for members, cent in clusters:  # sources with no embedding at all: one speaker per source
        if cent is None:
            sid = new_speaker_id(group, keys[min(members)])
            for i in members:
                ids[i] = sid
    return [str(x) for x in ids], speakers


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
