"""Every bad value of a numeric option stops the build before any work: exit status 2 and one line
that names the option."""
from __future__ import annotations

import dataclasses

import pytest

from pipelines.build_corpus import main
from pipelines.options import build_parser, option_of
from run.settings import CorpusSettings
from tests.test_build_corpus import write_sources

BAD = {  # option → values that must be refused
    "--samples_per_shard": ["0", "-3", "1.5", "x"],
    "--output_sample_rate": ["0", "7999", "192001"],
    "--commit_every_hours": ["0", "-1", "nan"],
    "--max_download_mb": ["0", "-1", "inf"],
    "--http_timeout_s": ["0", "-5"],
    "--download_timeout_s": ["0", "-1"],
    "--http_retries": ["-1", "two"],
    "--max_items_per_source": ["0", "-1"],
    "--max_listed_items": ["0", "999"],
    "--max_duration_s": ["0", "-1"],
    "--max_hours_total": ["0", "-2"],
    "--min_clip_s": ["0", "-1", "21", "nan"],
    "--max_clip_s": ["3", "-1"],
    "--min_silence_ms": ["0", "-10", "300"],
    "--keep_silence_ms": ["-1", "301"],
    "--silence_rel_db": ["0", "-30"],
    "--max_merge_gap_s": ["-0.5"],
    "--decode_timeout_s": ["0", "-1"],
    "--max_scratch_gb": ["0", "-1", "0.0005"],
    "--asr_batch_seconds": ["-1", "5", "19.9"],
    "--asr_chunk_s": ["0", "4", "-1"],
    "--min_speech_ratio": ["-0.1", "1.5", "nan"],
    "--min_bandwidth_hz": ["-1"],
    "--max_clipping": ["-0.1", "2"],
    "--min_snr_db": ["nan", "loud"],
    "--max_rt60_s": ["0", "-0.5", "nan"],
    "--max_no_speech_prob": ["1.5", "-0.1"],
    "--min_avg_logprob": ["0.5", "x"],
    "--max_compression_ratio": ["0", "-1"],
    "--max_ngram_repeats": ["0", "1.5"],
    "--whisper_max_chars_per_s": ["0", "-3"],
    "--dedup_min_fraction": ["0", "1.5", "nan"],
    "--dedup_max_ber": ["0", "0.5", "nan"],
    "--dedup_text_threshold": ["0", "2", "nan"],
    "--dedup_text_min_words": ["0", "-1"],
    "--min_voice_s": ["-1", "nan"],
    "--min_download_kbps": ["0", "-5"],
    "--same_voice_similarity": ["1.5", "-0.1"],
    "--voice_change_margin": ["2", "-1"],
    "--voice_change_evidence_s": ["-1", "x"],
    "--min_edge_turn_s": ["-1", "nan"],
    "--voice_change_pause_s": ["-1", "x"],
    "--voice_change_guard_s": ["-0.5", "nan"],
    "--speaker_link_similarity": ["1.5", "nan"],
    "--min_dnsmos_ovrl": ["0.5", "6"],
    "--similar_k": ["-1", "1.5"],
    "--min_confidence": ["-0.1", "1.1"],
    "--min_chars_per_s": ["-1", "26"],
    "--max_chars_per_s": ["4", "-1"],
    "--rate_outlier_iqr": ["0", "-1"],
    "--min_words": ["0", "-1", "2.5"],
}
CASES = [(opt, v) for opt, values in BAD.items() for v in values]


def test_every_numeric_option_has_bad_values():
    numeric = {a.option_strings[0] for a in build_parser()._actions
               if getattr(a, "setting_paths", None) and a.type is not None}
    assert numeric == set(BAD)


@pytest.mark.parametrize("option,value", CASES, ids=[f"{o}={v}" for o, v in CASES])
def test_bad_value_exits_2_naming_the_option(tmp_path, capsys, option, value):
    out = tmp_path / "corpus"
    extra = ["--dnsmos", "on"] if option == "--min_dnsmos_ovrl" else []
    code = main(["--sources", write_sources(tmp_path / "s.txt", ["/nonexistent.wav"]), "--output", str(out),
                 "--speakers", "off", *extra, f"{option}={value}"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2
    assert len(err) == 1 and option in err[0], err
    assert not out.exists()


def test_the_table_names_every_field_the_options_set():
    table = option_of(build_parser())
    assert table["split.min_clip_s"] == table["quality.min_clip_s"] == "--min_clip_s"
    assert table["transcribe.chunk_s"] == "--asr_chunk_s" and table["gates.min_speech_ratio"] == "--min_speech_ratio"
    names = {f.name for f in dataclasses.fields(CorpusSettings)}
    assert {p.split(".")[0] for p in table} <= names


def test_a_new_shaping_option_is_recorded_and_old_corpora_are_not_compared_on_it(tmp_path):
    from pipelines.options import parse_args
    from run.state import shaping_differences
    argv = ["--sources", "s.txt", "--output", str(tmp_path / "o"), "--speakers", "off"]
    old = parse_args(argv)[0].shaping()
    new_settings = parse_args(argv + ["--min_words", "3"])[0]
    new = new_settings.shaping()
    assert new["quality"]["min_words"] == 3 and old["quality"]["min_words"] is None
    names = option_of(build_parser())
    options = {key: names.get(path, key) for key, path in new_settings.shaping_paths().items()}
    assert shaping_differences(old, new, options) == ["--min_words 3 (corpus: None)"]
    predates = {**old, "quality": {k: v for k, v in old["quality"].items() if k != "min_words"}}
    assert shaping_differences(predates, new, options) == []
