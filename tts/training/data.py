"""WebDataset loaders over speechmill shards, for the trainers.

Shards are split by node (``torchrun`` rank) and by dataloader worker; ``resampled`` draws shards
with replacement forever (multi-node training); otherwise the shards are read in a seeded order,
epoch after epoch. Samples are decoded (FLAC → float32 at 22 050 Hz), tokenised, given a
conditioning clip from *another* sample of the same voice (as TorToiSe's autoregressive model is
trained) — one of the sample's ``similar_keys`` when one was read recently, else another recent
clip of its speaker id, else (counted) itself — filtered by the model's limits and by text the
cleaner cannot read (skips are counted), and batched by similar length. Every usable clip is in a
batch each epoch: with ``drop_last``, the last, short batch of a length-sorted group is filled up with
the next-longest clips of the group (seen twice) rather than dropped, so the longest clips are trained on too.
Mels are not computed here: the training step computes them on the device.
"""
from __future__ import annotations

import collections
import io
import json
import os
import random
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import soundfile as sf
import torch
import webdataset as wds

from corpus.guard import CorpusDamaged
from corpus.published import published_shards
from tts.frontends.mel import SAMPLE_RATE, SAMPLES_PER_CODE
from tts.frontends.text import UNK, TextCleaningError


@dataclass
class Sample:
    key: str
    audio: np.ndarray  # float32 mono at 22 050 Hz
    text: str
    speaker: str
    tokens: Optional[List[int]] = None
    cond: Optional[np.ndarray] = None
    similar_keys: tuple = ()
    url: str = ""  # the shard it came from
    codes: Optional[np.ndarray] = None  # its DVAE codes, when a code cache has them


@dataclass
class LoaderConfig:
    batch_size: int = 8
    max_text_tokens: int = 402
    max_codes: int = 604
    min_audio_s: float = 0.5
    cond_samples: int = 132300  # 6 s at 22 050 Hz
    shuffle_buffer: int = 256
    bucket_batches: int = 8  # sort this many batches' worth of samples by length
    resampled: bool = False
    seed: int = 0
    num_workers: int = 0
    drop_last: bool = False  # drop an epoch's last, smaller batch (contrastive losses need full batches)
    split_by_node: bool = True  # each torchrun rank reads its own shards (eval sets read everything)


@dataclass
class Counts:
    read: int = 0
    skipped: Dict[str, int] = field(default_factory=collections.Counter)
    cond_from_similar: int = 0  # from one of the sample's similar_keys
    cond_from_speaker: int = 0  # none of them at hand: another clip of the speaker id
    cond_from_self: int = 0


def expand_urls(spec: str) -> List[str]:
    """Shard paths from a glob (``corpus/shards/*.tar``), brace pattern, comma-separated list, or a corpus
    folder (its published shards).

    A shard inside a speechmill corpus (``CORPUS/shards/NAME.tar``) is used only when the corpus passes
    ``corpus.integrity.check_open`` and a committed run published it: a shard that is a link, one
    left by an unfinished commit, a truncated or deleted one is refused with the file named.
    """
    import glob as _glob

    import braceexpand
    out = []
    for part in spec.split(","):
        part = part.strip()
        for p in braceexpand.braceexpand(part):
            if "://" not in p and os.path.isdir(os.path.join(p, "runs")) and os.path.isdir(os.path.join(p, "shards")):
                out += published_shards(p)
                continue
            matches = sorted(_glob.glob(p))
            out += matches if matches else ([p] if "://" in p else [])
    if not out:
        raise FileNotFoundError(f"no shards match {spec!r}")
    return _checked(out)


def _checked(urls: List[str]) -> List[str]:
    """``urls``, each shard of a corpus checked against what the corpus published."""
    corpora: Dict[str, set] = {}
    for url in urls:
        if "://" in url:
            continue
        if os.path.islink(url):
            raise CorpusDamaged(f"{url} is a symbolic link; a corpus's shards must not be links")
        folder = os.path.dirname(os.path.abspath(url))
        root = os.path.dirname(folder)
        if os.path.basename(folder) != "shards" or not os.path.isdir(os.path.join(root, "runs")):
            continue  # shards outside a corpus: the user's own files
        if root not in corpora:
            corpora[root] = {os.path.abspath(p) for p in published_shards(root)}
        if os.path.abspath(url) not in corpora[root]:
            raise CorpusDamaged(f"{url} was not published by a committed run of {root} (a leftover or a stray "
                                f"copy); python -m pipelines.verify {root} says more")
    return urls


def decode(raw: dict) -> Sample:
    audio, sr = sf.read(io.BytesIO(raw["flac"]), dtype="float32")
    if sr != SAMPLE_RATE:
        raise ValueError(f"{raw['__key__']}: {sr} Hz audio, the trainers need {SAMPLE_RATE} Hz shards")
    meta = json.loads(raw["json"]) if "json" in raw else {}
    text = raw["txt"].decode("utf-8") if "txt" in raw else meta.get("text", "")
    return Sample(raw["__key__"], audio if audio.ndim == 1 else audio.mean(1), text,
                  str(meta.get("speaker") or meta.get("source_id") or raw["__key__"].rsplit("_", 1)[0]),
                  similar_keys=tuple(meta.get("similar_keys") or ()), url=str(raw.get("__url__", "")))


class ShardLoader(torch.utils.data.IterableDataset):
    """An iterable of batches (dicts of tensors) over shards; see the module docstring."""

    def __init__(self, urls: Sequence[str], tokenize: Callable[[str], List[int]], cfg: LoaderConfig,
                 epochs: Optional[int] = None, codes: Optional[Callable[[str, str], Optional[np.ndarray]]] = None):
        """``codes(shard url, key)``: a clip's cached DVAE codes (or None), put in batches as ``codes``."""
        super().__init__()
        self.urls, self.tokenize, self.cfg, self.epochs = list(urls), tokenize, cfg, epochs
        self.codes = codes
        self.counts = Counts()

    def _raw(self, epoch: int) -> Iterator[dict]:
        c = self.cfg
        urls = list(self.urls)
        if not c.resampled:
            random.Random(c.seed * 1000003 + epoch).shuffle(urls)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if c.split_by_node and not c.resampled and world > len(urls):
            raise ValueError(f"{len(urls)} shards cannot be split across {world} ranks: write smaller shards "
                             f"(--samples_per_shard) or pass --resampled")
        splitter = wds.split_by_node if c.split_by_node else (lambda src, group=None: src)
        ds = wds.WebDataset(urls, resampled=c.resampled, shardshuffle=False, nodesplitter=splitter,
                            workersplitter=wds.split_by_worker, empty_check=False, seed=c.seed + epoch)
        return iter(ds)

    def samples(self) -> Iterator[Sample]:
        c = self.cfg
        rng = random.Random(c.seed)
        recent: Dict[str, collections.deque] = collections.defaultdict(lambda: collections.deque(maxlen=32))
        epoch = 0
        while self.epochs is None or epoch < self.epochs:
            buf: List[Sample] = []
            got, usable = False, 0
            for raw in self._raw(epoch):
                got = True
                self.counts.read += 1
                try:
                    s = decode(raw)
                except Exception:  # a bad sample is counted and skipped
                    self.counts.skipped["undecodable"] += 1
                    continue
                reason = self._skip_reason(s)
                if reason:
                    self.counts.skipped[reason] += 1
                    continue
                if self.codes is not None:
                    s.codes = self.codes(s.url, s.key)
                buf.append(s)
                usable += 1
                if len(buf) >= c.shuffle_buffer:
                    yield self._with_cond(buf.pop(rng.randrange(len(buf))), recent, rng)
            while buf:
                yield self._with_cond(buf.pop(rng.randrange(len(buf))), recent, rng)
            if not got:
                raise RuntimeError(f"no samples in shards {self.urls[:3]}...")
            if not usable and self.epochs is None:  # all skipped: endless passes would yield nothing
                raise ValueError(f"every sample in {len(self.urls)} shards was skipped "
                                 f"({dict(self.counts.skipped)}): check the model's limits and the tokenizer")
            yield None  # end of an epoch: batches never mix two passes over the same samples
            epoch += 1

    def _skip_reason(self, s: Sample) -> Optional[str]:
        c = self.cfg
        if len(s.audio) < c.min_audio_s * SAMPLE_RATE:
            return "too_short"
        if -(-len(s.audio) // SAMPLES_PER_CODE) > c.max_codes:
            return "too_many_codes"
        try:
            s.tokens = self.tokenize(s.text)
        except TextCleaningError:
            return "uncleanable_text"
        if not s.tokens:
            return "empty_text"
        if len(s.tokens) > c.max_text_tokens:
            return "too_many_text_tokens"
        if UNK in s.tokens:  # as TorToiSe's datasets: never teach the model [UNK]
            return "unknown_characters"
        return None

    def _with_cond(self, s: Sample, recent: Dict[str, collections.deque], rng: random.Random) -> Sample:
        others = [o for o in recent[s.speaker] if o.key != s.key]
        similar = [o for o in others if o.key in s.similar_keys]
        if similar:
            s.cond = rng.choice(similar).audio
            self.counts.cond_from_similar += 1
        elif others:
            s.cond = rng.choice(others).audio
            self.counts.cond_from_speaker += 1
        else:
            s.cond = s.audio
            self.counts.cond_from_self += 1
        recent[s.speaker].append(Sample(s.key, s.audio, "", s.speaker))
        return s

    def __iter__(self) -> Iterator[dict]:
        c = self.cfg
        rng = random.Random(c.seed + 1)
        pending: List[Sample] = []
        previous: List[Sample] = []  # the epoch's last full group: fills up a last group too small for a batch
        yielded = 0
        for s in self.samples():
            if s is None:
                if c.drop_last and 0 < len(pending) < c.batch_size and len(previous) >= c.batch_size - len(pending):
                    pending = pending + rng.sample(previous, c.batch_size - len(pending))
                for batch in self._bucketed(pending, rng):
                    yielded += 1
                    yield batch
                if not yielded and self.epochs is None:  # an endless loader that can never yield a batch
                    raise ValueError(f"{len(self.urls)} shards gave no full batch of {c.batch_size} "
                                     f"(skipped: {dict(self.counts.skipped)}): use a smaller --batch_size or more data")
                pending, previous, yielded = [], [], 0
                continue
            pending.append(s)
            if len(pending) >= c.batch_size * c.bucket_batches:
                for batch in self._bucketed(pending, rng):
                    yielded += 1
                    yield batch
                pending, previous = [], pending
        if pending:
            yield from self._bucketed(pending, rng)

    def _bucketed(self, items: List[Sample], rng: random.Random) -> Iterator[dict]:
        size = self.cfg.batch_size
        items = sorted(items, key=lambda s: len(s.audio))
        batches = [items[i:i + size] for i in range(0, len(items), size)]
        if self.cfg.drop_last and batches and len(batches[-1]) < size:
            # the longest clips: filled up with the clips just shorter than them, or dropped when there are too few
            batches[-1] = items[-size:] if len(items) >= size else []
            batches = [b for b in batches if b]
        rng.shuffle(batches)
        for b in batches:
            yield collate(b, self.cfg.cond_samples, rng)


def crop_or_pad(x: np.ndarray, n: int, rng: Optional[random.Random] = None) -> np.ndarray:
    if len(x) >= n:
        start = rng.randrange(len(x) - n + 1) if rng is not None else 0
        return x[start:start + n]
    return np.pad(x, (0, n - len(x)))


def collate(samples: List[Sample], cond_samples: int, rng: Optional[random.Random] = None) -> dict:
    """Pad to the longest (a multiple of 1024 samples); text padded with 0, which is [STOP]; conditioning
    clips cut to ``cond_samples`` at a random (seeded) place, or zero-padded; cached DVAE codes (each clip's
    ``wav_length // 1024 + 1``) padded with 0 when every clip has them."""
    n = max(len(s.audio) for s in samples)
    n = -(-n // SAMPLES_PER_CODE) * SAMPLES_PER_CODE
    wav = torch.zeros(len(samples), n)
    for i, s in enumerate(samples):
        wav[i, : len(s.audio)] = torch.from_numpy(s.audio)
    t = max(len(s.tokens) for s in samples)
    text = torch.zeros(len(samples), t, dtype=torch.long)
    for i, s in enumerate(samples):
        text[i, : len(s.tokens)] = torch.tensor(s.tokens)
    cond = torch.stack([torch.from_numpy(crop_or_pad(s.cond, cond_samples, rng)) for s in samples])
    batch = {"keys": [s.key for s in samples], "wav": wav, "wav_lengths": torch.tensor([len(s.audio) for s in samples]),
             "text": text, "text_lengths": torch.tensor([len(s.tokens) for s in samples]), "cond": cond,
             "speakers": [s.speaker for s in samples]}
    if samples and all(s.codes is not None for s in samples):  # cached codes: the DVAE need not run
        codes = torch.zeros(len(samples), max(len(s.codes) for s in samples), dtype=torch.long)
        for i, s in enumerate(samples):
            codes[i, : len(s.codes)] = torch.from_numpy(s.codes.astype(np.int64))
        batch["codes"] = codes
    return batch
