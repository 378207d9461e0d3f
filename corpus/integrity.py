"""Is a corpus whole? What its committed runs published, checked against what is there.

Every commit records, in its run's record, the sha256 and size of each file it published
(``checksums``) and the files it removed (``deleted``: the shards a compaction or a ``--redo``
replaced). Walking the records oldest first gives the files the corpus must hold. Two depths:

* ``check_open`` (every command that opens a corpus, before it reads or writes): the run
  records parse, every name in them is the corpus's own, no folder or file of the corpus is a
  link, and every published file is there with its recorded size. It costs one listing per
  folder, so a deleted or truncated shard or manifest part stops a command (naming the file)
  instead of being silently read around.
* ``verify`` (``python -m pipelines.verify``): all of that, plus each file's checksum, every
  manifest row a tar member and every tar member a row, keys unique and valid, files nobody
  published, open journals and the lock. It returns one line per problem.

Records written before checksums existed are checked for presence only (their files' sizes and
checksums are unknown).
"""
from __future__ import annotations

import json
import posixpath
import tarfile
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import pyarrow as pa
import pyarrow.compute as pc

from corpus import commit, guard
from corpus.layout import Layout, committed_runs, read_parquet, read_run_record
from storage import fs

SHARD_DIRS = (("shards", "manifest"), ("rejected_shards", "rejected_manifest"))


@dataclass
class Expected:
    """A file the committed runs say the corpus holds."""

    rel: str  # relative to the corpus root
    run: str
    sha256: Optional[str] = None
    size: Optional[int] = None


@dataclass
class Published:
    runs: Dict[str, dict]
    files: Dict[str, Expected] = field(default_factory=dict)


def _record_files(tag: str, info: dict, source: str) -> Dict[str, Tuple[Optional[str], Optional[int]]]:
    """{relative path: (sha256, size)} of what one run published (checksums unknown for old records)."""
    sums = info.get("checksums")
    if isinstance(sums, dict):
        out = {}
        for rel, d in sums.items():
            guard.check_published_name(rel, source)
            if not (isinstance(d, dict) and isinstance(d.get("sha256"), str) and isinstance(d.get("size"), int)):
                raise guard.CorpusDamaged(f"{source}: the checksum of {rel!r} is not a sha256 and a size")
            out[rel] = (d["sha256"], d["size"])
        return out
    out = {}
    files = info.get("files") or {}
    for folder, names in files.items():
        if not isinstance(names, list):
            raise guard.CorpusDamaged(f"{source}: files.{folder} is not a list")
        for name in names:
            if not isinstance(name, str):
                raise guard.CorpusDamaged(f"{source}: {name!r} in files.{folder} is not a file name")
            rel = name if folder == "tables" else f"{folder}/{name}"
            guard.check_published_name(rel, source)
            out[rel] = (None, None)
    if info.get("kind") == "compact":  # compactions before checksums listed only their shards
        for rel in list(out):
            if rel.startswith("shards/"):
                out[f"manifest/{rel[len('shards/'):-4]}.parquet"] = (None, None)
    return out


def _record_deleted(info: dict, source: str) -> List[str]:
    deleted = info.get("deleted")
    if isinstance(deleted, list):
        return [guard.check_published_name(rel, source) for rel in deleted]
    merged = info.get("merged") or []  # compactions before "deleted" existed
    out = []
    for name in merged:
        guard.check_shard_name(name, source)
        out += [f"shards/{name}.tar", f"manifest/{name}.parquet"]
    return out


def published(layout: Layout, runs: Optional[Dict[str, dict]] = None) -> Published:
    """The files the committed runs published and no later commit removed, oldest run first."""
    runs = committed_runs(layout) if runs is None else runs
    out = Published(runs)
    for tag, info in sorted(runs.items(), key=lambda kv: (str(kv[1].get("published_at", "")), kv[0])):
        source = layout.path("runs", f"{tag}.json")
        for rel in _record_deleted(info, source):
            out.files.pop(rel, None)
        for rel, (sha, size) in _record_files(tag, info, source).items():
            out.files[rel] = Expected(rel, tag, sha, size)
    return out


def _listing(layout: Layout) -> Dict[str, int]:
    """{relative path: size} of every file in the published folders (temporary files left out)."""
    found = {}
    for folder in guard.PUBLISHED_DIRS:
        for path, size in fs.sizes(layout.path(folder)).items():
            if not fs.is_temporary(path):
                found[f"{folder}/{path.rsplit('/', 1)[-1]}"] = size
    return found


def _legacy_replaced(rel: str, pub: Published, listing: Dict[str, int]) -> bool:
    """An old record's shard that is gone together with its manifest part was replaced by a --redo
    that did not yet record what it deleted."""
    for shards, manifest in SHARD_DIRS:
        if rel.startswith(f"{shards}/"):
            other = f"{manifest}/{rel[len(shards) + 1:-4]}.parquet"
        elif rel.startswith(f"{manifest}/"):
            other = f"{shards}/{rel[len(manifest) + 1:-8]}.tar"
        else:
            continue
        e = pub.files.get(other)
        return other not in listing and (e is None or e.size is None)
    return False


def presence_problems(layout: Layout, pub: Published, listing: Dict[str, int]) -> List[str]:
    """Published files that are missing or have another size than recorded."""
    problems = []
    for rel, e in sorted(pub.files.items()):
        path = layout.path(*rel.split("/"))
        if rel not in listing:
            if e.size is None and _legacy_replaced(rel, pub, listing):
                continue
            problems.append(f"{path}: missing (published by run {e.run})")
        elif e.size is not None and listing[rel] != e.size:
            problems.append(f"{path}: {listing[rel]} bytes, but run {e.run} published {e.size}")
    return problems


KEY_PATTERN = r"^[A-Za-z0-9_-]{1,80}$"  # schemas.keys.is_valid_key, for a whole column at once


def check_part(path: str, t: pa.Table) -> None:
    """A shard's manifest part: its keys are valid sample keys and its rows all name its shard (both become
    paths: the shard a reader opens, the file a report writes)."""
    name = path.rsplit("/", 1)[-1][:-len(".parquet")]
    guard.check_shard_name(name, path)
    if "key" in t.column_names and t.num_rows:
        keys = t.column("key")
        bad = pc.invert(pc.fill_null(pc.match_substring_regex(keys, KEY_PATTERN), False))
        if pc.any(bad).as_py():
            key = next(k for k in keys.to_pylist() if k is None or not guard.is_valid_key(k))
            raise guard.CorpusDamaged(f"{path}: key {key!r} is not a valid sample key")
    if "shard" in t.column_names and t.num_rows:
        shards = pc.unique(t.column("shard")).to_pylist()
        if shards != [name]:
            raise guard.CorpusDamaged(f"{path}: its rows name shard {next(s for s in shards if s != name)!r}, "
                                      f"not {name!r}")


def check_parts(layout: Layout, pub: Published) -> None:
    """``check_part`` for every published manifest part (two columns each: no audio, no other column)."""
    for rel in sorted(pub.files):
        folder = rel.split("/", 1)[0]
        if folder in ("manifest", "rejected_manifest"):
            path = layout.path(*rel.split("/"))
            check_part(path, read_parquet(path, columns=["key", "shard"]))


def check_open(layout: Layout) -> Published:
    """The cheap checks every command makes before trusting a corpus; ``CorpusDamaged`` on the first problem.

    Call it after ``commit.recover`` (under the lock) or where no commit can be open.
    """
    guard.check_no_links(layout.root)
    pub = published(layout)
    problems = presence_problems(layout, pub, _listing(layout))
    if problems:
        more = f" (and {len(problems) - 1} more problems; python -m pipelines.verify {layout.root} lists them)" \
            if len(problems) > 1 else ""
        raise guard.CorpusDamaged(problems[0] + more)
    check_parts(layout, pub)
    return pub


def shard_path(layout: Layout, folder: str, name, source: str) -> str:
    """The path of shard ``name`` (from a table) in ``folder``, once the name is known to be a shard's."""
    return layout.path(folder, guard.check_shard_name(name, source) + ".tar")


# ---- verify ------------------------------------------------------------------------------------------------


def tar_keys(path: str) -> List[str]:
    """The sample keys of a tar, one per member (a key with three members is listed three times)."""
    keys = []
    with fs.local_copy(path) as local, tarfile.open(local, "r:") as tf:
        for m in tf:
            if m.isfile():
                keys.append(m.name.partition(".")[0])
            elif not m.isdir():
                raise ValueError(f"member {m.name!r} is not a file")
    return keys


def _check_shard(layout: Layout, shards: str, manifest: str, name: str, problems: List[str],
                 seen: Dict[str, str]) -> None:
    tar = layout.path(shards, name + ".tar")
    part = layout.path(manifest, name + ".parquet")
    try:
        table = read_parquet(part, columns=["key", "shard"])
    except guard.CorpusDamaged as e:
        problems.append(str(e))
        return
    except (pa.ArrowException, KeyError) as e:
        problems.append(f"{part}: has no key and shard columns ({e})")
        return
    rows = table.column("key").to_pylist()
    for s in set(table.column("shard").to_pylist()):
        if s != name:
            problems.append(f"{part}: a row names shard {s!r}, not {name!r}")
    try:
        members = tar_keys(tar)
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        problems.append(f"{tar}: not a readable tar ({type(e).__name__}: {e})")
        return
    in_tar = set(members)
    for key in rows:
        if not isinstance(key, str) or not guard.is_valid_key(key):
            problems.append(f"{part}: key {key!r} is not a valid sample key")
        elif key in seen:
            problems.append(f"{part}: key {key} is also in {seen[key]}")
        else:
            seen[key] = part
        if key not in in_tar:
            problems.append(f"{part}: row {key} has no sample in {tar}")
    for key in sorted(in_tar - set(rows)):
        problems.append(f"{tar}: sample {key} has no row in {part}")


def verify(layout: Layout, progress: Callable[[str], None] = lambda m: None) -> List[str]:
    """Every problem of the corpus at ``layout``, one line each (none: the corpus is whole)."""
    problems: List[str] = []
    try:
        guard.check_no_links(layout.root)
    except guard.CorpusDamaged as e:
        problems.append(str(e))
        return problems
    for path in fs.list_dir(layout.path(commit.JOURNAL), suffix=".json"):
        if fs.is_temporary(path):
            continue
        try:
            commit.check_plan(layout.root, json.loads(fs.read_bytes(path)), path)
        except (guard.CorpusDamaged, ValueError) as e:
            problems.append(str(e) if isinstance(e, guard.CorpusDamaged) else f"{path}: not a readable journal ({e})")
            continue
        problems.append(f"{path}: an unfinished commit (a command is publishing now, or was interrupted; "
                        f"the next build, report or compaction finishes or undoes it)")
    runs = {}
    for path in fs.list_dir(layout.path("runs"), suffix=".json"):
        if fs.is_temporary(path):
            continue
        try:
            tag = guard.check_run_tag(path.rsplit("/", 1)[-1][:-5], path)
            runs[tag] = read_run_record(path)
        except guard.CorpusDamaged as e:
            problems.append(str(e))
    if not runs and not problems:
        return [f"{layout.root}: not a speechmill corpus (no committed run in {layout.path('runs')})"]
    try:
        pub = published(layout, runs)
    except guard.CorpusDamaged as e:
        return problems + [str(e)]
    listing = _listing(layout)
    problems += presence_problems(layout, pub, listing)
    for rel in sorted(set(listing) - set(pub.files)):
        problems.append(f"{layout.path(*rel.split('/'))}: published by no committed run")
    bad = {layout.path(*rel.split("/")) for rel, e in pub.files.items()
           if rel not in listing or (e.size is not None and listing[rel] != e.size)}
    checked = 0
    for rel, e in sorted(pub.files.items()):
        path = layout.path(*rel.split("/"))
        if e.sha256 is None or rel not in listing or path in bad:
            continue
        sha, _ = fs.digest(path)
        if sha != e.sha256:
            problems.append(f"{path}: its sha256 is not the one run {e.run} published")
            bad.add(path)
        checked += 1
        if checked % 200 == 0:
            progress(f"checked the checksums of {checked} files")
    seen: Dict[str, str] = {}
    for shards, manifest in SHARD_DIRS:
        names = sorted(posixpath.basename(rel)[:-4] for rel in pub.files if rel.startswith(f"{shards}/"))
        for name in names:
            tar, part = layout.path(shards, name + ".tar"), layout.path(manifest, name + ".parquet")
            if tar in bad or part in bad or f"{manifest}/{name}.parquet" not in listing \
                    or f"{shards}/{name}.tar" not in listing:
                if f"{manifest}/{name}.parquet" not in pub.files and tar not in bad:
                    problems.append(f"{tar}: its manifest part {part} was never published")
                continue
            _check_shard(layout, shards, manifest, name, problems, seen if shards == "shards" else {})
    return problems
