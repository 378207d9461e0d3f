"""TorToiSe's text front end: English cleaning and the 255-entry BPE tokenizer.

Cleaning, in TorToiSe's order: transliterate to ASCII (unidecode), lowercase, spell out numbers
(commas dropped; dollars and cents; decimals with "point"; ordinals; 1000–2999 read as years),
expand abbreviations ("mr." → "mister" …), collapse whitespace, drop double quotes. Each space then
becomes the ``[SPACE]`` token and the ``tokenizers`` BPE model encodes the rest; ``[STOP]`` = 0,
``[UNK]`` = 1, ``[SPACE]`` = 2. ``train_tokenizer`` fits a new 255-entry tokenizer of the same
format on corpus transcripts. A text the cleaner cannot spell out (a number too large for words)
raises ``TextCleaningError``; the loaders skip and count such clips, and the tokenizer trainer skips them.
"""
from __future__ import annotations

import functools
import os
import re
from typing import Iterable, List, Set, Tuple

STOP, UNK, SPACE = 0, 1, 2


class TextCleaningError(ValueError):
    """The cleaner cannot turn this text into words (e.g. a number with more digits than inflect can name)."""
SPECIAL_TOKENS = ["[STOP]", "[UNK]", "[SPACE]"]

ABBREVIATIONS = [(re.compile(r"\b%s\." % a, re.IGNORECASE), full) for a, full in [
    ("mrs", "misess"), ("mr", "mister"), ("dr", "doctor"), ("st", "saint"), ("co", "company"), ("jr", "junior"),
    ("maj", "major"), ("gen", "general"), ("drs", "doctors"), ("rev", "reverend"), ("lt", "lieutenant"),
    ("hon", "honorable"), ("sgt", "sergeant"), ("capt", "captain"), ("esq", "esquire"), ("ltd", "limited"),
    ("col", "colonel"), ("ft", "fort")]]

_COMMA_NUMBER = re.compile(r"([0-9][0-9\,]+[0-9])")
_POUNDS = re.compile(r"£([0-9\,]*[0-9]+)")
_DOLLARS = re.compile(r"\$([0-9\.\,]*[0-9]+)")
_DECIMAL = re.compile(r"([0-9]+\.[0-9]+)")
_ORDINAL = re.compile(r"[0-9]+(st|nd|rd|th)")
_NUMBER = re.compile(r"[0-9]+")


@functools.lru_cache(maxsize=1)
def _inflect():
    import inflect
    return inflect.engine()


def _dollars(m: re.Match) -> str:
    parts = m.group(1).split(".")
    if len(parts) > 2:
        return m.group(1) + " dollars"
    dollars = int(parts[0]) if parts[0] else 0
    cents = int(parts[1]) if len(parts) > 1 and parts[1] else 0
    unit = lambda n, one, many: f"{n} {one if n == 1 else many}"
    if dollars and cents:
        return f"{unit(dollars, 'dollar', 'dollars')}, {unit(cents, 'cent', 'cents')}"
    if dollars:
        return unit(dollars, "dollar", "dollars")
    if cents:
        return unit(cents, "cent", "cents")
    return "zero dollars"


def _number(m: re.Match) -> str:
    p, n = _inflect(), int(m.group(0))
    if 1000 < n < 3000:
        if n == 2000:
            return "two thousand"
        if 2000 < n < 2010:
            return "two thousand " + p.number_to_words(n % 100)
        if n % 100 == 0:
            return p.number_to_words(n // 100) + " hundred"
        return p.number_to_words(n, andword="", zero="oh", group=2).replace(", ", " ")
    return p.number_to_words(n, andword="")


def normalize_numbers(text: str) -> str:
    text = _COMMA_NUMBER.sub(lambda m: m.group(1).replace(",", ""), text)
    text = _POUNDS.sub(r"\1 pounds", text)
    text = _DOLLARS.sub(_dollars, text)
    text = _DECIMAL.sub(lambda m: m.group(1).replace(".", " point "), text)
    text = _ORDINAL.sub(lambda m: _inflect().number_to_words(m.group(0)), text)
    return _NUMBER.sub(_number, text)


def clean_text(text: str) -> str:
    """TorToiSe's ``english_cleaners``."""
    from unidecode import unidecode
    try:
        text = normalize_numbers(unidecode(text).lower())
    except Exception as e:  # inflect raises its own classes for numbers it cannot name
        raise TextCleaningError(f"cannot spell out the numbers in {text[:80]!r} ({type(e).__name__})") from None
    for pattern, full in ABBREVIATIONS:
        text = pattern.sub(full, text)
    return re.sub(r"\s+", " ", text).replace('"', "")


class TextTokenizer:
    """Encodes text as TorToiSe does; loads the released ``tokenizer.json`` as is."""

    def __init__(self, path: str):
        from tokenizers import Tokenizer
        self.path = path
        try:
            self.tokenizer = Tokenizer.from_file(path)
        except Exception as e:  # the tokenizers library raises its own exception for a missing or bad file
            raise ValueError(f"cannot read the tokenizer {path}: {e}") from None

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> List[int]:
        return self.tokenizer.encode(clean_text(text).replace(" ", "[SPACE]")).ids

    __call__ = encode

    def characters(self) -> Set[str]:
        """The characters it spells (a BPE vocabulary holds each of its characters as one entry), and space."""
        return {t for t in self.tokenizer.get_vocab() if len(t) == 1} | {" "}

    def lacking(self, text: str) -> List[str]:
        """The characters of ``text`` this tokenizer cannot spell, as the user typed them (with what the
        cleaner made of one when that differs): each would become ``[UNK]`` or vanish from the speech."""
        from unidecode import unidecode
        known = self.characters()
        unknown = {c for c in clean_text(text) if c not in known}
        out = []
        for c in dict.fromkeys(text):
            if c.isspace():
                continue
            if c.isascii():
                if c in unknown:
                    out.append(repr(c))
                continue
            read = unidecode(c).lower().strip()
            if not read:
                out.append(f"{c!r} (U+{ord(c):04X}, dropped)")
            elif any(x in unknown for x in read):
                out.append(f"{c!r} (read as {read!r})")
        return out

    def decode(self, ids: Iterable[int]) -> str:
        text = self.tokenizer.decode(list(ids), skip_special_tokens=False).replace(" ", "")
        return text.replace("[SPACE]", " ").replace("[STOP]", "").replace("[UNK]", "")


def transliterated(text: str) -> List[Tuple[str, str]]:
    """Letters of another script than Latin, with the ASCII the cleaner reads them as ("日" → "ri")."""
    import unicodedata

    from unidecode import unidecode
    out = []
    for c in dict.fromkeys(text):
        if not c.isascii() and unicodedata.category(c).startswith("L") and "LATIN" not in unicodedata.name(c, ""):
            read = unidecode(c).lower().strip()
            if read:
                out.append((c, read))
    return out


def _cleanable(texts: Iterable[str]) -> Iterable[str]:
    for t in texts:
        try:
            yield clean_text(t)
        except TextCleaningError:
            continue


def train_tokenizer(texts: Iterable[str], out_path: str, vocab_size: int = 255) -> TextTokenizer:
    """A new BPE tokenizer of the released format (specials 0–2, Whitespace pre-tokenizer) fit on ``texts``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(special_tokens=SPECIAL_TOKENS, vocab_size=vocab_size, show_progress=False)
    tok.train_from_iterator(_cleanable(texts), trainer)
    tmp = f"{out_path}.tmp-{os.getpid()}"
    tok.save(tmp)
    os.replace(tmp, out_path)
    return TextTokenizer(out_path)
