"""What report.html costs on a large corpus: seconds to build it, and its size.

    python -m benchmarks.report_speed [--clips 100000] [--keep DIR]

Builds a corpus of ``--clips`` kept clips (1,000 per shard) with the tables a real corpus has,
each written as the pipeline writes it (``schemas.tables`` rows, ``corpus.shards.table_bytes``):
manifest parts with speaker embeddings and similar keys, the rejected rows of every reason
(30 % of the clips) with the manifest of their kept audio, source rows and a run record per wave.
Only the shards the audit view draws its clips from are written as tar files, each by the
pipeline's shard writer with all its 1,000 samples; the sampled clips are real speech (from
``shared/data/real_speech``), the others a few milliseconds of silence, so the tars stay small.
Then ``report.build_report`` runs twice: cold (no clip copied yet) and again (the clips
are already beside the page). Prints seconds, the page's size and the audio folder's size.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import scratch_dir

REAL_SPEECH = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "real_speech"
PER_SHARD = 1000
REJECT_MIX = {("segment", "too_short"): 0.25, ("quality", "not_speech"): 0.08, ("quality", "low_bandwidth"): 0.07,
              ("quality", "clipped"): 0.03, ("quality", "noisy"): 0.2, ("segment", "multi_speaker"): 0.07,
              ("quality", "low_confidence"): 0.18, ("quality", "speaking_rate_high"): 0.04,
              ("quality", "speaking_rate_outlier"): 0.08}
WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly hex jolly "
         "boxing frogs near an old stone bridge at dawn").split()


def real_clips(sample_rate: int = 22050) -> list:
    """(FLAC bytes, seconds) of 5 s pieces of the shared real recordings (tones where they are missing)."""
    import soundfile as sf
    import soxr

    from audio.flac import encode_flac
    out = []
    for name in ("jfk.flac", "lj_1.wav", "lj_2.wav"):
        path = REAL_SPEECH / name
        if not path.exists():
            continue
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
        x = soxr.resample(x.mean(axis=1), sr, sample_rate)
        for a in range(0, len(x) - 4 * sample_rate, 5 * sample_rate):
            piece = x[a:a + 5 * sample_rate]
            out.append((encode_flac((piece * 32767).astype(np.int16), sample_rate), len(piece) / sample_rate))
    if not out:  # no shared recordings here: tones are still playable audio
        t = np.arange(5 * sample_rate) / sample_rate
        out = [(encode_flac((0.2 * np.sin(2 * np.pi * f * t) * 32767).astype(np.int16), sample_rate), 5.0)
               for f in (220, 330, 440)]
    return out


def make_corpus(root: Path, n_clips: int, seed: int = 0) -> dict:
    """Write the tables of a corpus with ``n_clips`` kept clips; returns the records needed for its shards."""
    from corpus.shards import table_bytes
    from schemas import tables
    from schemas.keys import segment_key
    from schemas.records import ClipScores, Rejection, Segment, Source, SourceResult, Transcript

    rng = np.random.default_rng(seed)
    n_sources = max(1, n_clips // 50)
    n_rejected = int(n_clips * 0.3)
    runs = max(1, n_sources // 100)
    sources = [Source(f"https://example.org/ep/{i}.mp3", f"feed-{i:06d}", title=f"Episode {i}: a talk about things",
                      uploader=f"Host {i % 97}", extractor="generic", webpage_url=f"https://example.org/ep/{i}",
                      item_id=str(i)) for i in range(n_sources)]
    per_source = np.bincount(rng.integers(0, n_sources, n_clips + n_rejected), minlength=n_sources)
    pack = str(root / "_bench_pack.clips")
    transcripts, rejections, durations = [], [], np.zeros(n_sources)
    kinds = list(REJECT_MIX)
    probs = np.array(list(REJECT_MIX.values()))
    order = rng.permutation(n_clips + n_rejected)
    slot = 0
    for si, src in enumerate(sources):
        t0 = 0.0
        speakers = [f"spk-{(si * 7 + j) % (n_sources // 3 + 1):08x}" for j in range(1 + si % 3)]
        for _ in range(per_source[si]):
            d = float(np.clip(rng.gamma(4.0, 2.5), 4.0, 20.0))
            scores = ClipScores(float(rng.uniform(0.5, 1.0)), float(rng.uniform(4000, 11025)),
                                float(rng.exponential(0.0003)), float(rng.normal(30, 6)), None, None, None)
            emb = rng.standard_normal(256).astype(np.float16).tobytes()
            seg = Segment(segment_key(src.source_id, int(t0 * 1000)), src, round(t0, 3), round(t0 + d, 3), 22050,
                          pack, 0, 0, scores, emb)
            t0 += d + float(rng.uniform(0.3, 3.0))
            text = " ".join(rng.choice(WORDS, size=max(3, int(d * 2.6))))
            if order[slot] < n_clips:
                transcripts.append(Transcript(seg, text, float(rng.beta(12, 2)), "tiny-bench",
                                              speaker=speakers[slot % len(speakers)],
                                              similar_keys=tuple(f"{src.source_id}_{k:09d}" for k in range(3))))
            else:
                stage, reason = kinds[int(rng.choice(len(kinds), p=probs / probs.sum()))]
                rejections.append(Rejection.for_segment(seg, stage, reason, f"{reason} (synthetic)",
                                                        text=text if stage == "quality" else None))
            slot += 1
        durations[si] = t0 * 1.1
    tags = [f"bench{r:07d}" for r in range(runs)]
    run_of = {src.source_id: tags[i * runs // n_sources] for i, src in enumerate(sources)}

    def put(rel: str, data: bytes):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    kept_shards = [transcripts[i:i + PER_SHARD] for i in range(0, len(transcripts), PER_SHARD)]
    for i, part in enumerate(kept_shards):
        put(f"manifest/shard-{i:06d}.parquet",
            table_bytes([tables.manifest_row(t, f"shard-{i:06d}") for t in part], tables.MANIFEST))
    rejected_shards = [rejections[i:i + PER_SHARD] for i in range(0, len(rejections), PER_SHARD)]
    for i, part in enumerate(rejected_shards):
        rows = []
        for r in part:
            row = {**tables.rejected_row(r), "shard": f"shard-{i:06d}"}
            row.pop("run")
            rows.append(row)
        put(f"rejected_manifest/shard-{i:06d}.parquet", table_bytes(rows, tables.REJECTED_MANIFEST))
    for r, tag in enumerate(tags):
        mine = [s for s in range(n_sources) if run_of[sources[s].source_id] == tag]
        results = [SourceResult.of(sources[s], "ok", duration_s=float(durations[s]), n_segments=int(per_source[s]))
                   for s in mine]
        put(f"sources/run-{tag}.parquet", table_bytes([tables.source_row(x, tag) for x in results], tables.SOURCES))
        rows = [tables.rejected_row(x, tag) for x in rejections if run_of[x.source_id] == tag]
        put(f"rejected/run-{tag}.parquet", table_bytes(rows, tables.REJECTED))
        hours_in = float(durations[mine].sum()) / 3600
        put(f"runs/{tag}.json", json.dumps({
            "run": tag, "published_at": f"2026-01-01T{r // 60:02d}:{r % 60:02d}:00+00:00", "elapsed_s": 600.0,
            "hours_in": hours_in, "asr_padding_fraction": 0.05, "kept": sum(per_source[mine]), "wave": r,
            "waves": runs, "asr_model": "tiny-bench", "files": {}}, default=int).encode())
    return {"kept_shards": kept_shards, "rejected_shards": rejected_shards, "pack": pack}


def write_sampled_shards(root: Path, records: dict, cfg) -> int:
    """Write, with the pipeline's shard writer, the shards holding the audit view's clips; returns how many."""
    from audio.flac import encode_flac
    from corpus.layout import Layout
    from corpus.shards import write_rejected_shard, write_shard
    from report import data
    corpus = data.read_corpus(Layout(str(root)))
    kept = {r["key"] for r in data.kept_sample(corpus.manifest, cfg)}
    rejected = {r["key"] for rows in data.rejected_sample(corpus.rejected, cfg).values() for r in rows}
    clips = real_clips()
    silence_flac = encode_flac(np.zeros(110, np.int16), 22050)
    blob, refs = bytearray(silence_flac), []
    for flac, d in clips:
        refs.append((len(blob), len(flac), d))
        blob += flac
    Path(records["pack"]).write_bytes(bytes(blob))
    n = 0

    def wire(seg, wanted: set, i: int):
        if seg.key not in wanted:
            return dataclasses.replace(seg, pack_offset=0, pack_length=len(silence_flac))
        off, length, d = refs[i % len(refs)]
        return dataclasses.replace(seg, pack_offset=off, pack_length=length, end_s=round(seg.start_s + d, 3))

    for i, part in enumerate(records["kept_shards"]):
        if kept & {t.key for t in part}:
            ts = [dataclasses.replace(t, segment=wire(t.segment, kept, j)) for j, t in enumerate(part)]
            write_shard(str(root / "shards"), str(root / "manifest"), f"shard-{i:06d}", ts)
            n += 1
    for i, part in enumerate(records["rejected_shards"]):
        if rejected & {r.key for r in part}:
            rs = [dataclasses.replace(r, segment=wire(r.segment, rejected, j)) for j, r in enumerate(part)]
            write_rejected_shard(str(root / "rejected_shards"), str(root / "rejected_manifest"), f"shard-{i:06d}", rs)
            n += 1
    Path(records["pack"]).unlink()
    return n


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6 if path.exists() else 0.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.report_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=100_000, help="kept clips in the corpus (default 100000)")
    p.add_argument("--keep", default=None, help="build the corpus in this folder and keep it (default: a temp dir)")
    args = p.parse_args(argv)
    if args.clips < 1:
        print(f"[report_speed] error: --clips must be >= 1, got {args.clips}", file=sys.stderr)
        return 2
    from run.console import quiet_libraries
    quiet_libraries()
    from corpus.layout import Layout
    from report import build_report, data

    with scratch_dir("speechmill-report-bench-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp) / "corpus"
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        print(f"[report_speed] writing a corpus of {args.clips:,} kept clips in {root} ...", file=sys.stderr)
        t = time.monotonic()
        records = make_corpus(root, args.clips)
        cfg = data.ReportConfig()
        n_tars = write_sampled_shards(root, records, cfg)
        print(f"[report_speed] corpus written in {time.monotonic() - t:.1f} s ({n_tars} shards written as tars; "
              f"tables {folder_mb(root) - folder_mb(root / 'shards') - folder_mb(root / 'rejected_shards'):.1f} MB)",
              file=sys.stderr)
        layout = Layout(str(root))
        t = time.monotonic()
        corpus = data.read_corpus(layout)
        read_s = time.monotonic() - t
        cold = build_report(layout, cfg)
        warm = build_report(layout, cfg)
        audio_mb = folder_mb(root / "report_audio")
        print(f"\nreport.html for {corpus.manifest.num_rows:,} kept clips, {len(corpus.rejected):,} rejected rows, "
              f"{len(corpus.sources):,} sources, {len(corpus.runs)} runs")
        print(f"{'':28}{'seconds':>10}")
        print(f"{'reading the tables':28}{read_s:>10.1f}")
        print(f"{'report, cold':28}{cold.seconds:>10.1f}")
        print(f"{'report, clips already out':28}{warm.seconds:>10.1f}")
        print(f"page: {cold.n_bytes / 1e6:.2f} MB; report_audio/: {audio_mb:.2f} MB for {cold.audit_clips} clips")
        ok = cold.seconds < 60 and cold.n_bytes < 5e6
        print(f"target (under 60 s, page a few MB): {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
