import pytest

from schemas.records import Segment, Source, Transcript
from transforms.quality import QualityConfig, judge

SRC = Source("file:///a.wav", "file-abc")


def t(text, conf=0.9, dur=10.0):
    seg = Segment("file-abc_000000000", SRC, 0.0, dur, 22050, "p", 0, 1)
    return Transcript(seg, text, conf, "m")


CFG = QualityConfig(min_confidence=0.6, min_chars_per_s=5, max_chars_per_s=25)


@pytest.mark.parametrize("tr,reason", [
    (t("hello there " * 10), None),
    (t("   "), "empty_transcript"),
    (t("hello there " * 10, conf=0.3), "low_confidence"),
    (t("hi"), "speaking_rate_low"),
    (t("x" * 300), "speaking_rate_high"),
    (t("hello " * 5, dur=2.0), "too_short"),
    (t("hello " * 50, dur=25.0), "too_long"),
])
def test_rules(tr, reason):
    verdict = judge(tr, CFG)
    assert (verdict[0] if verdict else None) == reason
    if verdict:
        assert verdict[1]  # every rejection says why


def test_bad_thresholds_are_refused():
    with pytest.raises(ValueError, match="min_confidence"):
        QualityConfig(min_confidence=1.5).validate()
    with pytest.raises(ValueError, match="chars_per_s"):
        QualityConfig(min_chars_per_s=30, max_chars_per_s=20).validate()


def test_min_words_rejects_short_transcripts_and_is_off_by_default():
    few = QualityConfig(min_confidence=0.6, min_chars_per_s=0, max_chars_per_s=25, min_words=3)
    assert judge(t("hello there", dur=4.0), few) == ("too_few_words", "2 words < 3")
    assert judge(t("hello there you", dur=4.0), few) is None
    assert judge(t("hello there", dur=4.0), QualityConfig(min_chars_per_s=0)) is None
