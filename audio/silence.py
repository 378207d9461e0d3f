"""Split a recording into clips at pauses, from its frame energies and (when given) its speech frames.

The recipe (pydub ``split_on_silence(min_silence_len=600, silence_thresh=-40)``) used an absolute
threshold; here silence is judged against the file's own level (its 95th-percentile frame energy),
so the same speech recorded 40 dB quieter splits the same way. With a speech mask the level is
judged locally (``local_level``: the loudest second within 5 s), so a quiet speaker in a file with a
loud one still has speech, which ends in a clip or a rejected row, never in nothing. With a speech mask from a voice
activity detector, a pause is also any frame that is not speech, so music or hum under the pauses
no longer hides them, and a file with no speech at all gives no clips (``no_speech``).

Rules, in order:
1. A frame is a pause when it is quieter than ``level - silence_rel_db`` or is not speech; pause
   runs of at least ``min_silence_ms`` (and any pause at either end of the file) separate regions.
2. Each region keeps up to ``keep_silence_ms`` of the pause on each side, but never reaches into
   its neighbour: two regions that would overlap meet in the middle of what they share.
3. A region longer than ``max_clip_s`` is cut in the middle of its longest pause among the places
   that leave a left piece of ``min_clip_s``..``max_clip_s`` (the pauses between sentences, which
   are longer than those between words); only where that window holds no pause at all is it cut
   at its quietest point (lowest smoothed energy). Repeated until it fits.
4. A piece shorter than ``min_clip_s`` is merged with the neighbour across the smaller gap when the
   result fits in ``max_clip_s`` and the gap is at most ``max_merge_gap_s``; what still is too
   short is rejected.
5. Speech frames (by the speech mask) that no piece covers — speech more than ``silence_rel_db``
   under the local level, such as a quiet voice in the seconds after a loud one — are returned as
   ``too_quiet`` stretches, so that all detected speech ends in a clip or a rejected row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from audio.vad import speech_mask
from schemas.settings import SHAPING, SettingError, setting

LEVEL_PERCENTILE = 95.0
LOCAL_S = 5.0


@dataclass(frozen=True)
class SplitParams:
    min_clip_s: float = setting(4.0, role=SHAPING)
    max_clip_s: float = setting(20.0, role=SHAPING)
    min_silence_ms: float = setting(600.0, role=SHAPING)
    keep_silence_ms: float = setting(200.0, role=SHAPING)
    silence_rel_db: float = setting(30.0, role=SHAPING)
    max_merge_gap_s: float = setting(2.0, role=SHAPING)
    # a file whose level is below this is silence, whatever its shape
    silent_file_db: float = setting(-85.0, role=SHAPING)
    # level minus 10th percentile: below this there is no speech
    min_dynamic_range_db: float = setting(3.0, role=SHAPING)
    smooth_ms: float = setting(150.0, role=SHAPING)
    # a file with less speech than this (by the speech mask) has none
    min_speech_s: float = setting(0.5, role=SHAPING)
    # VAD probability where speech starts (it ends 0.15 below)
    speech_threshold: float = setting(0.5, role=SHAPING)

    def validate(self) -> "SplitParams":
        if not 0 < self.min_clip_s:
            raise SettingError("min_clip_s", f"must be > 0, got {self.min_clip_s:g}")
        if not self.min_clip_s <= self.max_clip_s:
            raise SettingError("min_clip_s", f"({self.min_clip_s:g}) must be at most {{0}} ({self.max_clip_s:g})",
                               "max_clip_s")
        if not self.min_silence_ms > 0:
            raise SettingError("min_silence_ms", f"must be > 0, got {self.min_silence_ms:g}")
        if not 0 <= self.keep_silence_ms * 2 <= self.min_silence_ms:
            raise SettingError("keep_silence_ms", f"must be between 0 and half of {{0}} (got {self.keep_silence_ms:g} "
                               f"and {self.min_silence_ms:g})", "min_silence_ms")
        if not self.silence_rel_db > 0:
            raise SettingError("silence_rel_db", f"must be > 0, got {self.silence_rel_db:g}")
        if not self.max_merge_gap_s >= 0:
            raise SettingError("max_merge_gap_s", f"must be >= 0, got {self.max_merge_gap_s:g}")
        return self


@dataclass(frozen=True)
class Piece:
    start: int  # frame index, inclusive
    end: int  # frame index, exclusive


@dataclass(frozen=True)
class SplitResult:
    clips: Tuple[Piece, ...]
    too_short: Tuple[Piece, ...]
    file_reason: str = ""  # set when the whole file is rejected ("silent", "no_dynamics", "no_speech", "no_audio")
    level_db: float = float("nan")
    threshold_db: float = float("nan")
    pause: Optional[np.ndarray] = field(default=None, compare=False, repr=False)  # frames that may hold a cut
    speech: Optional[np.ndarray] = field(default=None, compare=False, repr=False)  # speech frames, with a VAD
    too_quiet: Tuple[Piece, ...] = ()  # speech the VAD hears inside a pause: far under the speech around it

    def file_detail(self, duration_s: float, params: "SplitParams") -> str:
        """Why the whole file was rejected, in words (``file_reason`` says which)."""
        if self.file_reason == "no_audio":
            return "no samples"
        if self.file_reason == "no_speech":
            return f"the voice detector found under {params.min_speech_s:g} s of speech in {duration_s:.1f} s"
        return f"level {self.level_db:.1f} dBFS over {duration_s:.1f} s"


def local_level(db: np.ndarray, hop_s: float, span_s: float = LOCAL_S) -> np.ndarray:
    """Each frame's local level: the loudest 1 s block's 95th-percentile energy within ``span_s``
    either side (a pause inside quiet speech is judged against that speech, not the file's loudest part)."""
    from scipy.ndimage import maximum_filter1d
    block = max(1, int(round(1.0 / hop_s)))
    n = len(db)
    nb = -(-n // block)
    full = n // block  # whole blocks in one vectorised call (nanpercentile runs row by row)
    levels = np.empty(nb, dtype=np.float64)
    levels[:full] = np.percentile(db[:full * block].reshape(full, block), LEVEL_PERCENTILE, axis=1)
    if nb > full:
        levels[full:] = np.percentile(db[full * block:], LEVEL_PERCENTILE)
    levels = maximum_filter1d(levels, size=2 * int(round(span_s)) + 1, mode="nearest")
    return np.repeat(levels, block)[:n]


def _runs(mask: np.ndarray) -> List[Tuple[int, int]]:
    """[start, end) of each run of True."""
    if not len(mask):
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def _smoothed(db: np.ndarray, width: int) -> np.ndarray:
    if width <= 1:
        return db.astype(np.float64)
    power = 10.0 ** (db.astype(np.float64) / 10.0)
    kernel = np.ones(width) / width
    return 10.0 * np.log10(np.convolve(power, kernel, mode="same") + 1e-30)


def _quiet_part(s: int, e: int, quiet: np.ndarray) -> Tuple[int, int]:
    """A pause narrowed to its longest run of quiet frames, when it has one: the voice detector is
    unsure at the soft start and end of speech, and the quiet frames say where the pause really is."""
    runs = _runs(quiet[s:e])
    if not runs:
        return s, e
    a, b = max(runs, key=lambda r: (r[1] - r[0], -r[0]))
    return s + a, s + b


def _longest_pause(pause: np.ndarray, lo: int, hi: int):
    """Middle frame of the longest pause run whose middle lies in [lo, hi] (ties: nearest the
    window's centre, then earliest), or None when the window holds no pause."""
    best = None
    centre = (lo + hi) / 2
    for a, b in _runs(pause[max(0, lo - 200):hi + 201]):
        a, b = a + max(0, lo - 200), b + max(0, lo - 200)
        mid = (a + b) // 2
        if not lo <= mid <= hi:
            continue
        key = (b - a, -abs(mid - centre), -mid)
        if best is None or key > best[0]:
            best = (key, mid)
    return None if best is None else best[1]


def _split_long(p: Piece, smooth: np.ndarray, pause: np.ndarray, min_f: int, max_f: int) -> List[Piece]:
    out = []
    s, e = p.start, p.end
    while e - s > max_f:
        lo, hi = s + min_f, min(s + max_f, e - min_f)
        if lo > hi:  # cannot leave a valid piece on both sides: keep the left piece valid
            lo, hi = max(s + 1, e - max_f), s + max_f
        cut = _longest_pause(pause, lo, hi)
        if cut is None:
            cut = lo + int(np.argmin(smooth[lo:hi + 1]))
        out.append(Piece(s, cut))
        s = cut
    out.append(Piece(s, e))
    return out


def _merge_short(pieces: List[Piece], min_f: int, max_f: int, max_gap_f: int) -> List[Piece]:
    pieces = list(pieces)
    changed = True
    while changed:
        changed = False
        for i, p in enumerate(pieces):
            if p.end - p.start >= min_f:
                continue
            options = []
            if i > 0:
                q = pieces[i - 1]
                options.append((p.start - q.end, i - 1, Piece(q.start, p.end)))
            if i + 1 < len(pieces):
                q = pieces[i + 1]
                options.append((q.start - p.end, i, Piece(p.start, q.end)))
            options = [o for o in options if o[0] <= max_gap_f and o[2].end - o[2].start <= max_f]
            if options:
                _, j, merged = min(options, key=lambda o: (o[0], o[2].end - o[2].start))
                pieces[j:j + 2] = [merged]
                changed = True
                break
    return pieces


def _speech_outside(speech: np.ndarray, pieces: List[Piece], max_gap_f: int) -> Tuple[Piece, ...]:
    """Stretches of VAD speech that no piece covers (runs closer than ``max_gap_f`` joined): speech so
    far under the local level that it fell inside a pause. Each becomes a rejected row, not nothing."""
    covered = np.zeros(len(speech), dtype=bool)
    for p in pieces:
        covered[p.start:p.end] = True
    out: List[Piece] = []
    for a, b in _runs(speech & ~covered):
        if out and a - out[-1].end < max_gap_f and not covered[out[-1].end:a].any():
            out[-1] = Piece(out[-1].start, b)
        else:
            out.append(Piece(a, b))
    return tuple(out)


def split_on_silence(db: np.ndarray, hop_s: float, params: SplitParams = SplitParams(),
                     speech_prob: Optional[np.ndarray] = None) -> SplitResult:
    """Clips (frame ranges) of a file given its frame energies in dBFS on a ``hop_s`` grid and,
    optionally, each frame's speech probability (on the same grid)."""
    speech = None if speech_prob is None else speech_mask(speech_prob, params.speech_threshold)
    n = len(db)
    if n == 0:
        return SplitResult((), (), "no_audio")
    level = float(np.percentile(db, LEVEL_PERCENTILE))
    floor = float(np.percentile(db, 10.0))
    threshold = level - params.silence_rel_db
    if level < params.silent_file_db:
        return SplitResult((), (), "silent", level, threshold)
    if level - floor < params.min_dynamic_range_db:
        return SplitResult((), (), "no_dynamics", level, threshold)
    if speech is not None and np.count_nonzero(speech) * hop_s < params.min_speech_s:
        return SplitResult((), (), "no_speech", level, threshold)

    min_f = max(1, int(round(params.min_clip_s / hop_s)))
    max_f = max(min_f, int(math.floor(params.max_clip_s / hop_s + 1e-9)))
    min_sil_f = max(1, int(round(params.min_silence_ms / 1000.0 / hop_s)))
    pad_f = int(round(params.keep_silence_ms / 1000.0 / hop_s))
    max_gap_f = int(round(params.max_merge_gap_s / hop_s))

    if speech is not None:  # the level is judged locally: speech far quieter than the loud part is still speech
        threshold = local_level(db, hop_s) - params.silence_rel_db
    quiet = silent = db < threshold
    # where a long region may be cut: quiet frames (half the silence margin) or frames not clearly speech
    soft = db < threshold + params.silence_rel_db / 2
    if speech is not None:
        silent = silent | ~speech
        soft = soft | (speech_prob < params.speech_threshold)
    cuts = [_quiet_part(s, e, quiet) for s, e in _runs(silent) if e - s >= min_sil_f or s == 0 or e == n]
    bounds = [0] + [x for run in cuts for x in run] + [n]
    regions = []
    for i in range(0, len(bounds), 2):
        s, e = bounds[i], bounds[i + 1]  # speech between the end of one cut and the start of the next
        if e > s:
            regions.append(Piece(max(0, s - pad_f), min(n, e + pad_f)))

    for i in range(1, len(regions)):  # a pause narrowed to its quiet part may be shorter than two paddings
        a, b = regions[i - 1], regions[i]
        if b.start < a.end:
            mid = (max(a.start, b.start) + min(a.end, b.end)) // 2
            regions[i - 1], regions[i] = Piece(a.start, mid), Piece(mid, b.end)
    smooth = _smoothed(db, int(round(params.smooth_ms / 1000.0 / hop_s)))
    pieces = [q for r in regions for q in _split_long(r, smooth, silent | soft, min_f, max_f)]
    pieces = _merge_short(pieces, min_f, max_f, max_gap_f)
    clips = tuple(p for p in pieces if p.end - p.start >= min_f)
    short = tuple(p for p in pieces if p.end - p.start < min_f)
    too_quiet = () if speech is None else _speech_outside(speech, pieces, min_sil_f)
    return SplitResult(clips, short, "", level, threshold, silent | soft, speech, too_quiet)


def quiet_details(db: np.ndarray, pieces, hop_s: float, params: "SplitParams") -> list:
    """Why each ``too_quiet`` piece was not made a clip: its level against the speech around it."""
    if not len(pieces):
        return []
    around = local_level(db, hop_s)
    out = []
    for p in pieces:
        peak, ref = float(np.max(db[p.start:p.end])), float(np.max(around[p.start:p.end]))
        out.append(f"speech at {peak:.1f} dBFS, {ref - peak:.0f} dB under the speech around it ({ref:.1f} dBFS); "
                   f"a clip's speech is within {params.silence_rel_db:g} dB of it")
    return out
