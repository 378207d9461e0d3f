"""Settings records: what a field means for a corpus is metadata on the field, and a bad value is a
``SettingError`` that names the field, so the command line can name its own option.

A field is corpus-shaping (``SHAPING``: a corpus is built with one value of it and a rerun with
another is refused), run-shaping (``OUTPUT``: it changes what a run writes, so it is part of the
run's fingerprint, but clips already made stay valid), or execution (no role: where and how fast).
A field holding another record is a ``part``: its own fields say what they are.
"""
from __future__ import annotations

import dataclasses
from dataclasses import MISSING
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

SHAPING = "shaping"
OUTPUT = "output"


def setting(default: Any = MISSING, *, role: Optional[str] = None, key: Optional[str] = None,
            read: Optional[str] = None, default_factory: Any = MISSING):
    """A leaf field. ``key``: its name in the recorded settings (default: the field's name);
    ``read``: a property recorded in its place (e.g. a model's label, which includes the revision)."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"role": role, "key": key, "read": read})


def part(default: Any = MISSING, *, nest: bool = False, roles: Optional[Mapping[str, str]] = None,
         default_factory: Any = MISSING):
    """A field holding a record. ``nest``: recorded under the field's name, else its keys join the
    parent's; ``roles``: the inner fields' roles, for a record whose class carries none."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"part": True, "nest": nest, "roles": dict(roles or {})})


class SettingError(ValueError):
    """A bad setting. ``path`` is the field ('min_clip_s', or 'split.min_clip_s' once placed in a
    larger record); ``text`` says what is wrong and refers to other fields as {0}, {1} (``others``)."""

    def __init__(self, path: str, text: str, *others: str):
        self.path, self.text, self.others = path, text, others
        super().__init__(self.describe())

    def within(self, prefix: str) -> "SettingError":
        return SettingError(f"{prefix}.{self.path}", self.text, *(f"{prefix}.{o}" for o in self.others))

    def describe(self, name_of: Callable[[str], str] = lambda path: path) -> str:
        text = self.text
        for i, other in enumerate(self.others):
            text = text.replace("{%d}" % i, name_of(other))
        return f"{name_of(self.path)} {text}"


def validate_parts(record) -> None:
    """Validate every part of ``record`` with its own ``validate``; errors name the part's path."""
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if f.metadata.get("part") and hasattr(value, "validate"):
            try:
                value.validate()
            except SettingError as e:
                raise e.within(f.name) from None


def recorded(record, roles: Tuple[str, ...]) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """(JSON-ready values of the fields whose role is in ``roles``, each flat key → the field's path)."""
    values: Dict[str, Any] = {}
    paths: Dict[str, str] = {}
    _walk(record, roles, "", {}, values, paths, "")
    return values, paths


def _walk(record, roles, prefix: str, role_of: Mapping[str, str], values: dict, paths: dict, key_prefix: str):
    for f in dataclasses.fields(record):
        md = f.metadata
        path = prefix + f.name
        if md.get("part"):
            if md["nest"]:
                inner: Dict[str, Any] = {}
                _walk(getattr(record, f.name), roles, path + ".", md["roles"], inner, paths, f"{key_prefix}{f.name}.")
                if inner:
                    values[f.name] = inner
            else:
                _walk(getattr(record, f.name), roles, path + ".", md["roles"], values, paths, key_prefix)
            continue
        if role_of.get(f.name, md.get("role")) not in roles:
            continue
        key = md.get("key") or f.name
        value = getattr(record, md.get("read") or f.name)
        values[key] = list(value) if isinstance(value, tuple) else value
        paths.setdefault(key_prefix + key, path)
