"""Model files that ship inside installed wheels, found without importing the package.

Importing a package can have side effects (``silero_vad`` sets torch's thread count for the whole
process; ``resemblyzer`` imports webrtcvad), and only the weights are needed, so the package's
folder is located with ``importlib.util.find_spec`` and the file read from there.
"""
from __future__ import annotations

import importlib.util
import os

from schemas.errors import SpeechmillError


class ModelFileMissing(SpeechmillError, RuntimeError):
    """The package holding a model file is not installed, or lacks the file."""

    reason = "model_missing"


def package_file(package: str, *parts: str, install: str) -> str:
    """Path of ``parts`` inside installed ``package``; raises ``ModelFileMissing`` saying to run ``install``."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileMissing(f"the {package} package is not installed ({install})")
    path = os.path.join(list(spec.submodule_search_locations)[0], *parts)
    if not os.path.isfile(path):
        raise ModelFileMissing(f"{package} has no {os.path.join(*parts)} ({install} installs a version that has it)")
    return path
