"""What a corpus already holds, and what a new run may do to it.

``CorpusState`` reads the committed runs once: each source's latest row, the corpus-shaping
settings of the latest run, and which sources a ``--redo`` selector picks. The decisions made
from it — which sources are done, whether new settings may be used — live here as pure functions
so that the rerun contract is in one place.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

from corpus.layout import Layout, committed_runs, committed_table, done_source_ids, latest_rows, run_order
from transforms.quality import THRESHOLD_REASONS


class CorpusSettingsError(ValueError):
    """The run's corpus-shaping settings differ from the corpus's and no --redo says what to do."""


@dataclass
class CorpusState:
    runs: Dict[str, dict]
    rows: List[dict]  # each source's latest committed row
    rejected_reasons: Dict[str, Set[str]] = field(default_factory=dict)  # source id → reasons in its latest run
    layout: Optional[Layout] = None

    @classmethod
    def read(cls, layout: Layout) -> "CorpusState":
        runs = committed_runs(layout)
        order = run_order(layout, runs)
        rows = latest_rows(committed_table(layout, "sources", order), order)
        current = {(r["source_id"], r.get("run")) for r in rows}
        reasons: Dict[str, Set[str]] = {}
        for r in committed_table(layout, "rejected", order).to_pylist():
            if (r["source_id"], r.get("run")) in current:
                reasons.setdefault(r["source_id"], set()).update({r["reason"], f"{r['stage']}/{r['reason']}"})
        return cls(runs, rows, reasons, layout)

    @property
    def latest_run(self) -> Optional[dict]:
        if not self.runs:
            return None
        return max(self.runs.values(), key=lambda r: r.get("published_at", ""))

    @property
    def shaping(self) -> Optional[dict]:
        """The corpus-shaping settings of the latest run that recorded them."""
        recorded = [r for r in self.runs.values() if r.get("shaping")]
        if not recorded:
            return None
        return max(recorded, key=lambda r: r.get("published_at", ""))["shaping"]

    def done(self) -> Set[str]:
        return done_source_ids(None, self.rows)

    def select(self, selectors: Sequence[str]) -> Set[str]:
        """Source ids a ``--redo`` picks; raises ``ValueError`` for a selector that picks nothing."""
        picked: Set[str] = set()
        for sel in selectors:
            low = sel.lower()
            if low == "all":
                hit = {r["source_id"] for r in self.rows}
            elif low in ("failed", "rejected", "deferred", "ok"):
                hit = {r["source_id"] for r in self.rows if r["status"] == low}
            elif low.startswith("reason:"):
                want = sel.split(":", 1)[1]
                hit = {r["source_id"] for r in self.rows
                       if r.get("reason") == want or want in self.rejected_reasons.get(r["source_id"], ())}
            else:
                hit = {r["source_id"] for r in self.rows if sel in (r["source_id"], r.get("uri"), r.get("alias"))}
            if not hit and self.rows:
                raise ValueError(f"--redo {sel}: no source of the corpus matches it (use all, failed, rejected, "
                                 f"reason:R, a source id or a source URI)")
            picked |= hit
        return picked

    def known_speakers(self) -> List[dict]:
        """Each speaker's latest row (group, id, centroid, clip count), for the next run to link to."""
        if self.layout is None:
            return []
        order = run_order(self.layout, self.runs)
        latest = {}
        for r in committed_table(self.layout, "speakers", order).to_pylist():
            cur = latest.get(r["speaker_id"])
            if cur is None or order.get(r["run"], -1) >= order.get(cur["run"], -1):
                latest[r["speaker_id"]] = r
        return [{"group": r["group"], "speaker_id": r["speaker_id"], "n_clips": r["n_clips"],
                 "centroid": [float(x) for x in r["centroid"]]} for _, r in sorted(latest.items())]

    def failed(self) -> Set[str]:
        return {r["source_id"] for r in self.rows if r["status"] in ("failed", "rejected")}


def check_settings(recorded: Optional[dict], current: dict, redo: Sequence[str], output: str,
                   option_of: Mapping[str, str] = {}, present_reasons: Set[str] = frozenset()) -> None:
    """Refuse new corpus-shaping settings unless the run says which sources to reprocess, and a
    ``--redo`` that would leave clips judged by the old settings beside the new ones.

    ``option_of`` maps a setting's path to the option a user types, so the message names options;
    ``present_reasons`` are the reasons of the corpus's rejected rows."""
    if not recorded:
        return
    diffs = shaping_differences(recorded, current, option_of)
    if not diffs:
        return
    if redo:
        _check_redo_covers(recorded, current, redo, option_of, present_reasons)
        return
    lines = "\n".join(f"    {d}" for d in diffs)
    raise CorpusSettingsError(
        f"these settings differ from the ones {output} was built with:\n{lines}\n"
        f"  The clips already there were made and judged with the corpus's settings. Either\n"
        f"    - build into a new --output, or\n"
        f"    - reprocess chosen sources with the new settings: --redo all | failed | rejected | reason:R "
        f"(e.g. reason:low_confidence) | SOURCE_ID, or\n"
        f"    - run again with the corpus's settings.")


def shaping_differences(recorded: dict, current: dict, option_of: Mapping[str, str]) -> List[str]:
    """Lines 'OPTION NEW (corpus: OLD)' for every corpus-shaping setting that differs."""
    old, new = dict(_flat(recorded)), dict(_flat(current))
    lines, seen = [], set()
    for key in sorted(set(old) | set(new)):
        if key not in old:  # a setting the corpus predates: nothing to compare with
            continue
        if old.get(key) != new.get(key):
            opt = option_of.get(key, key)
            if opt in seen:
                continue
            seen.add(opt)
            lines.append(f"{opt} {_show(new.get(key))} (corpus: {_show(old.get(key))})")
    return lines


def _show(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def redo_needed(recorded: dict, current: dict, present_reasons: Set[str]) -> Tuple[List[str], List[str]]:
    """(setting keys whose change every kept clip may fail, reasons whose rejected sources a loosened
    threshold may now keep). A stricter threshold, or any other change, needs every source again; a
    looser one only the sources it rejected (none when the corpus holds no such rejects)."""
    old, new = dict(_flat(recorded)), dict(_flat(current))
    every, reasons = [], []
    for key in sorted(k for k in old if old[k] != new.get(k)):
        reason = THRESHOLD_REASONS.get(key)
        a, b = old[key], new.get(key)
        if reason is None:
            every.append(key)
            continue
        tighter = key.rsplit(".", 1)[-1].startswith("min_")
        if b is None or (a is not None and (b < a if tighter else b > a)):  # turned off or loosened
            if reason in present_reasons:
                reasons.append(reason)
        else:
            every.append(key)
    return every, reasons


def _check_redo_covers(recorded: dict, current: dict, redo: Sequence[str], option_of: Mapping[str, str],
                       present_reasons: Set[str]) -> None:
    picked = {s.lower() for s in redo}
    if "all" in picked:
        return
    every, reasons = redo_needed(recorded, current, present_reasons)
    if every:
        names = ", ".join(dict.fromkeys(option_of.get(k, k) for k in every))
        raise CorpusSettingsError(
            f"--redo {','.join(redo)} would leave clips judged with the corpus's old settings: {names} "
            f"is stricter than (or changes) what the kept clips were made with, so any source's kept clips may "
            f"no longer pass. Reprocess every source: --redo all (or build into a new --output).")
    missing = [r for r in reasons if f"reason:{r}" not in picked]
    if missing:
        want = ",".join(f"reason:{r}" for r in reasons)
        raise CorpusSettingsError(
            f"--redo {','.join(redo)} leaves out sources that the loosened settings would now keep "
            f"(rejected as {', '.join(missing)}). Use --redo {want} (or --redo all).")


def _flat(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v
