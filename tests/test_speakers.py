"""One voice per clip, speaker ids across a feed, and conditioning candidates of the same voice."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import soxr

from audio.synth import SENTENCES, Recording, build_recording
from pipelines.build_corpus import run
from speakers import cluster, encoder
from tests.conftest import ONLY_LOCALHOST, SHARED_SPEECH, Route, have_shared_speech, permissive, rss
from tests.test_build_corpus import table, write_sources

HOST, GUEST = "en-us", "en-us+f3"  # a male and a female espeak voice (measured similarity ≈ 0.7)


def voiced(rec: Recording, voices):
    """(start, end, voice) of each sentence."""
    return [(s, e, voices[i % len(voices)]) for i, (s, e) in enumerate(rec.spans)]


def majority(clip, truth):
    """(voice holding most of the clip's speech, its share of the clip's speech)."""
    a, b = clip
    time = Counter()
    for s, e, v in truth:
        time[v] += max(0.0, min(b, e) - max(a, s))
    total = sum(time.values())
    if not total:
        return None, 1.0
    v, t = time.most_common(1)[0]
    return v, t / total


def check_corpus(out, truth_by_uri):
    """Every kept clip is one voice; each speaker id is one voice (≥ 95 %); candidates are the same voice."""
    manifest = table(out, "manifest")
    assert manifest
    voice_of, by_id = {}, {}
    for m in manifest:
        truth = truth_by_uri[m["source_uri"]]
        v, share = majority((m["start_s"], m["end_s"]), truth)
        assert share >= 0.99, (m["key"], m["start_s"], m["end_s"], share)  # no clip holds two voices
        voice_of[m["key"]] = v
        by_id.setdefault(m["speaker"], []).append(v)
    purity = sum(Counter(vs).most_common(1)[0][1] for vs in by_id.values()) / len(manifest)
    assert purity >= 0.95, by_id
    for m in manifest:
        assert all(voice_of.get(k, voice_of[m["key"]]) == voice_of[m["key"]] for k in m["similar_keys"])
        assert m["key"] not in m["similar_keys"] and len(m["speaker_embedding"]) == 256
    return manifest, by_id


def test_interview_with_clear_pauses(tmp_path, tiny_model):
    voices = [HOST, HOST, GUEST, GUEST]
    rec = build_recording(SENTENCES[:12], [0.9] * 11, seed=21, voices=voices)
    path = rec.write(str(tmp_path / "interview.wav"))
    out = tmp_path / "corpus"
    run(["--sources", write_sources(tmp_path / "s.txt", [path]), "--output", str(out), *permissive(tiny_model)])
    manifest, by_id = check_corpus(out, {"file://" + path: voiced(rec, voices)})
    assert len(by_id) == 2  # two voices, two ids
    assert all(len(m["similar_keys"]) >= 1 for m in manifest)


def test_fast_exchange_is_cut_at_the_short_pauses_between_turns(tmp_path, tiny_model):
    voices = [HOST, HOST, GUEST, GUEST]  # turns of two sentences, 0.3 s between everything
    rec = build_recording(SENTENCES[:12], [0.3] * 11, seed=22, voices=voices)
    path = rec.write(str(tmp_path / "exchange.wav"))
    out = tmp_path / "corpus"
    run(["--sources", write_sources(tmp_path / "s.txt", [path]), "--output", str(out), *permissive(tiny_model)])
    manifest, by_id = check_corpus(out, {"file://" + path: voiced(rec, voices)})
    assert len(by_id) == 2 and len(manifest) >= 4


@pytest.mark.skipif(not have_shared_speech(), reason="needs ../shared/data/real_speech")
def test_two_real_speakers_alternating(tmp_path, tiny_model):
    st, sr = sf.read(str(SHARED_SPEECH / "stereo_diarization.wav"), dtype="float32")
    left, right = soxr.resample(st[:, 0], sr, 22050), soxr.resample(st[:, 1], sr, 22050)
    gap = np.zeros(int(0.35 * 22050), np.float32)
    parts, truth, t = [], [], 0.0
    for i in range(6):
        x = left if i % 2 == 0 else right
        parts += [x, gap]
        truth.append((t, t + len(x) / 22050, "L" if i % 2 == 0 else "R"))
        t += (len(x) + len(gap)) / 22050
    path = str(tmp_path / "real.wav")
    sf.write(path, np.concatenate(parts), 22050)
    out = tmp_path / "corpus"
    run(["--sources", write_sources(tmp_path / "s.txt", [path]), "--output", str(out), *permissive(tiny_model),
         "--min_clip_s", "2"])  # the right speaker's sentence is under 4 s
    manifest, by_id = check_corpus(out, {"file://" + path: truth})
    assert len(by_id) == 2


def test_a_feeds_host_is_one_speaker_across_episodes_and_runs(server, tmp_path, tiny_model):
    voices = [HOST, HOST, GUEST, GUEST]
    eps, truth = [], {}
    for i in range(2):
        rec = build_recording(SENTENCES[4 * i:4 * i + 8], [0.9] * 7, seed=30 + i, voices=voices)
        path = rec.write(str(tmp_path / f"ep{i}.wav"))
        url = server.add(f"/ep{i}.wav", Route(open(path, "rb").read(), headers={"Content-Type": "audio/wav"}))
        eps.append(url)
        truth[url] = voiced(rec, voices)
    day = ["Mon, 01 Jan 2024 08:00:00 GMT", "Tue, 02 Jan 2024 08:00:00 GMT"]
    feed = lambda n: Route(rss([(f"Ep {i}", f"g{i}", day[i], eps[i], None) for i in range(n)]),
                           headers={"Content-Type": "application/rss+xml"})
    url = server.add("/feed.xml", feed(1))
    out = tmp_path / "corpus"
    args = ["--sources", write_sources(tmp_path / "s.txt", [url]), "--output", str(out), *permissive(tiny_model),
            "--allow_private_networks", ONLY_LOCALHOST]
    run(args)
    first = {m["key"]: m["speaker"] for m in table(out, "manifest")}
    server.routes["/feed.xml"] = feed(2)  # a new episode: the next run adds it
    run(args)
    manifest, by_id = check_corpus(out, truth)
    host_ids = {m["speaker"] for m in manifest if majority((m["start_s"], m["end_s"]), truth[m["source_uri"]])[0] == HOST}
    assert len(host_ids) == 1 and len(by_id) == 2  # host and guest, each one id over both episodes and runs
    assert all({m["key"]: m["speaker"] for m in manifest}[k] == v for k, v in first.items())  # earlier ids kept
    speakers = table(out, "speakers")
    assert {r["speaker_id"] for r in speakers} == set(by_id) and all(len(r["centroid"]) == 256 for r in speakers)


def test_given_speaker_column_wins(tmp_path, tiny_model, speech):
    (tmp_path / "s.csv").write_text(f"uri,speaker\n{speech['a'][1]},narrator-1\n")
    out = tmp_path / "corpus"
    run(["--sources", str(tmp_path / "s.csv"), "--output", str(out), *permissive(tiny_model)])
    manifest = table(out, "manifest")
    assert manifest and {m["speaker"] for m in manifest} == {"narrator-1"}
    assert all(set(m["similar_keys"]) <= {x["key"] for x in manifest} for m in manifest)


def test_clustering_is_blocked_and_deterministic():
    rng = np.random.default_rng(0)
    centres = cluster.normalise(rng.standard_normal((5, 256)))
    emb = cluster.normalise(centres[rng.integers(0, 5, 5000)] + rng.standard_normal((5000, 256)) * 0.02)
    a = cluster.cluster_labels(emb, 0.8, block=1000)
    b = cluster.cluster_labels(emb, 0.8, block=1000)
    assert (a == b).all() and a.max() + 1 == 5
    truth = np.argmax(emb @ centres.T, axis=1)
    assert len({(x, y) for x, y in zip(a, truth)}) == 5  # one cluster per true voice


@pytest.mark.skipif(not have_shared_speech(), reason="needs ../shared/data/real_speech")
@pytest.mark.parametrize("rate", [22050, 8000])
def test_encoder_hears_any_rate_as_its_own(rate):
    """Audio handed in at another rate, with that rate, embeds as at the encoder's 16 kHz; handed in as
    if it were 16 kHz, it does not (so the resampling is what makes them agree). The 1961 recording is
    band-limited below 4 kHz, so its 8 kHz copy holds the same speech."""
    x, sr = sf.read(str(SHARED_SPEECH / "jfk.flac"), dtype="float32")
    x = x.mean(axis=1) if x.ndim > 1 else x  # the file is stereo, the same speech on both channels

    def embed(y, r=encoder.RATE):
        return encoder.mean_embedding(encoder.embed_partials(encoder.partials(y, r)))
    at_16k = embed(soxr.resample(x, sr, encoder.RATE))
    other = soxr.resample(x, sr, rate)
    same, misread = float(at_16k @ embed(other, rate)), float(at_16k @ embed(other))
    print(f"{rate} Hz: cosine {same:.4f} with the rate given, {misread:.4f} read as 16 kHz")
    assert same >= 0.99 and misread < 0.9


@pytest.mark.skipif(not have_shared_speech(), reason="needs ../shared/data/real_speech")
def test_bfloat16_embeddings_of_real_speech_are_float32s_within_rounding():
    """The voice encoder in bfloat16 (the default where the CPU computes it natively) gives each 1.6 s
    piece of a real recording the voice float32 gives it; it does compute in bfloat16 (the bits
    differ), and a precision that does not exist is refused."""
    x, sr = sf.read(str(SHARED_SPEECH / "jfk.flac"), dtype="float32")
    pieces = encoder.partials(x.mean(axis=1) if x.ndim > 1 else x, sr)
    full = encoder.embed_partials(pieces, precision="float32")
    half = encoder.embed_partials(pieces, precision="bfloat16")
    cos = np.sum(full * half, axis=1)
    print(f"{len(pieces)} pieces: cosine bfloat16 vs float32 min {cos.min():.4f}")
    assert len(pieces) >= 5 and cos.min() >= 0.99 and not np.array_equal(full, half)
    assert float(encoder.mean_embedding(full) @ encoder.mean_embedding(half)) >= 0.998
    auto = encoder.embed_partials(pieces)
    assert np.array_equal(auto, half if encoder.native_bfloat16() else full)
    assert encoder.resolve_precision("auto", "cuda") == "float32"
    with pytest.raises(ValueError, match="float16"):
        encoder.resolve_precision("float16")


@pytest.mark.skipif(not have_shared_speech(), reason="needs ../shared/data/real_speech")
def test_the_speaker_precision_option_reaches_the_voice_encoder(tmp_path, tiny_model):
    """A build with ``--speaker_precision float32`` and one with ``bfloat16`` of the same real
    recording: the same clips, each clip's stored voice the same within rounding, and not the same
    bits (so the option is what the speaker stage used)."""
    from tests.conftest import copy_shared
    folder = tmp_path / "audio"
    folder.mkdir()
    copy_shared("lj_1.wav", folder)
    copy_shared("lj_2.wav", folder)
    rows = {}
    for precision in ("float32", "bfloat16"):
        out = tmp_path / precision
        run(["--sources", str(folder), "--output", str(out), *permissive(tiny_model),
             "--speaker_precision", precision])
        rows[precision] = {r["key"]: r["speaker_embedding"] for r in table(out, "manifest")}
    assert rows["float32"] and rows["float32"].keys() == rows["bfloat16"].keys()
    full, half = (np.array([rows[p][k] for k in sorted(rows[p])], dtype=np.float32) for p in ("float32", "bfloat16"))
    cos = np.sum(full * half, axis=1) / np.linalg.norm(full, axis=1) / np.linalg.norm(half, axis=1)
    assert cos.min() >= 0.99 and not np.array_equal(full, half), cos


def test_encoder_tells_the_test_voices_apart():
    from audio.synth import speak, trim

    def embed(voice, texts):
        return encoder.mean_embedding(encoder.embed_partials(encoder.partials(
            np.concatenate([trim(speak(t, 16000, voice=voice)) for t in texts]))))
    host_a, host_b = embed(HOST, SENTENCES[:2]), embed(HOST, SENTENCES[2:4])
    guest = embed(GUEST, SENTENCES[:2])
    assert float(host_a @ host_b) > 0.85 > 0.78 > float(host_a @ guest)


def test_the_encoders_mel_filterbank_is_librosas():
    """The filterbank is built without importing librosa; Resemblyzer's features come from librosa's."""
    import librosa
    ours = encoder.mel_basis()
    theirs = librosa.filters.mel(sr=encoder.RATE, n_fft=encoder.N_FFT, n_mels=encoder.N_MELS).astype(np.float32)
    assert ours.shape == theirs.shape == (40, 201)
    assert np.array_equal(ours, theirs)


def test_an_utterance_holding_two_voices_is_cut_out_alone():
    """An utterance whose 1.6 s partials are nearest to different voices (an overlap, no pause to cut
    at) is a mixed turn of its own, also where pieces too short to embed follow it to the clip's end."""
    from speakers.turns import TurnParams, _turns
    a, b = np.eye(256, dtype=np.float32)[:2]
    cents = np.stack([a, b])
    utts = [(0, 300, 0), (300, 500, 20), (500, 560, 20)]  # 10 ms frames: 3 s, 2 s, then 0.6 s (no embedding)
    by_utt = {(0, 0): np.stack([a, a]), (0, 1): np.stack([a, b])}
    turns = _turns(utts, by_utt, cents, 0, 0.01, TurnParams())
    assert [(t.start, t.end, t.mixed) for t in turns] == [(0, 300, False), (300, 500, True), (500, 560, False)]


def test_pieces_too_short_to_hear_between_two_voices_are_cut_out():
    """Between the last heard utterance of one voice and the first of the next, pieces too short to
    embed belong to neither for sure: they are cut out, not given to the side with the longer pause."""
    from speakers.turns import TurnParams, _turns
    a, b = np.eye(256, dtype=np.float32)[:2]
    utts = [(0, 300, 0), (300, 360, 40), (360, 660, 15)]  # 3 s of a, 0.6 s unheard, 3 s of b
    by_utt = {(0, 0): np.stack([a, a]), (0, 2): np.stack([b, b])}
    turns = _turns(utts, by_utt, np.stack([a, b]), 0, 0.01, TurnParams())
    assert [(t.start, t.end, t.mixed) for t in turns] == [(0, 300, False), (300, 360, True), (360, 660, False)]


def test_a_change_of_voice_without_a_pause_gives_up_a_guard_each_side():
    """Two voices that meet with less than change_pause_s of quiet (in a clip, or across the
    splitter's cut between clips) are cut only roughly: each side gives up change_guard_s, as a mixed
    turn; with a real pause between them, or in a source of one voice, nothing is given up."""
    from speakers.guard import guard_changes
    from speakers.turns import Turn
    a, b = np.eye(256, dtype=np.float32)[:2]
    pause = np.zeros(2000, bool)
    pause[600:700] = True  # 1 s of quiet where the second clip begins

    def clips():
        return [[Turn(0, 300, a, voice=0), Turn(300, 600, b, voice=1)],
                [Turn(600, 900, a, voice=0), Turn(900, 1000, a, voice=0)]]
    out = guard_changes(clips(), 2, pause, 0.01, pause_s=0.5, guard_s=0.4)
    assert [[(t.start, t.end, t.mixed) for t in c] for c in out] == [
        [(0, 260, False), (260, 300, True), (300, 340, True), (340, 600, False)],
        [(600, 900, False), (900, 1000, False)]]
    assert out[0][3].embedding is not None and out[0][1].embedding is None
    pause[600:700] = False
    pause[595:615] = True  # 0.2 s: too little to cut cleanly at
    out = guard_changes(clips(), 2, pause, 0.01, pause_s=0.5, guard_s=0.4)
    assert [(t.start, t.end, t.mixed) for t in out[0]][-2:] == [(340, 560, False), (560, 600, True)]
    assert [(t.start, t.end, t.mixed) for t in out[1]][:2] == [(600, 640, True), (640, 900, False)]
    assert guard_changes(clips(), 1, pause, 0.01, pause_s=0.5, guard_s=0.4) == clips()


def test_voices_that_blend_in_every_utterance_are_told_apart_by_their_partials():
    """Where two people overlap at every change, every utterance holds both: the means of the
    utterances are one blend, yet the 1.6 s partials fall into two voices."""
    from speakers.cluster import normalise
    from speakers.turns import TurnParams, _source_voices
    rng = np.random.default_rng(0)
    a, b = normalise(rng.standard_normal((2, 256)).astype(np.float32))
    noisy = lambda v: normalise(v + 0.02 * rng.standard_normal(256).astype(np.float32))
    plans = [[(u * 320, (u + 1) * 320, 20) for u in range(8)]]  # eight 3.2 s utterances (10 ms frames)
    parts = [[[x] for x in plans[0]]]
    by_utt = {(0, u): np.stack([noisy(a), noisy(b)]) for u in range(8)}  # each: a partial of each voice
    cents = _source_voices(plans, parts, by_utt, 0.01, 100, TurnParams())
    assert len(cents) == 2
    assert sorted(int(np.argmax(cents @ v)) for v in (a, b)) == [0, 1]  # one centroid each


def test_a_source_the_speaker_stage_found_one_voice_in_gets_one_id():
    """The speaker stage decides a source's voices on all of its utterances; a few clips of one lively
    voice (two apart here) would otherwise become two speakers of that file."""
    from speakers.cluster import ClusterParams, assign, normalise
    rng = np.random.default_rng(1)
    a, b = normalise(rng.standard_normal((2, 256)).astype(np.float32))
    emb = normalise(np.stack([a, a, b, b]) + 0.01 * rng.standard_normal((4, 256)).astype(np.float32))
    keys, sources, secs = [f"k{i}" for i in range(4)], ["s"] * 4, [8.0] * 4
    split, _ = assign("g", keys, sources, emb, [], ClusterParams(), secs=secs)
    assert len(set(split)) == 2  # clips alone: two voices
    one, _ = assign("g", keys, sources, emb, [], ClusterParams(), secs=secs, source_voice=[0] * 4)
    assert len(set(one)) == 1
    mixed, _ = assign("g", keys, sources, emb, [], ClusterParams(), secs=secs, source_voice=[0, 0, None, 0])
    assert len(set(mixed)) == 2  # only a source all of whose clips say so
    short = np.array([4.0, 4.0, 1.5, 1.5])  # the second voice's turns mostly cut away: too little for a voice alone
    alone, _ = assign("g", keys, sources, emb, [], ClusterParams(), secs=short)
    assert len(set(alone)) == 1
    told, _ = assign("g", keys, sources, emb, [], ClusterParams(), secs=short, source_voice=[0, 0, 1, 1])
    assert told[0] == told[1] != told[2] == told[3]
