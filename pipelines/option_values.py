"""Value types of the command line's options: a bad value is an argparse error naming the option."""
from __future__ import annotations

import argparse
import math
from typing import Optional


def number(text: str) -> float:
    """A finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def float_or_none(text: str) -> Optional[float]:
    """A number, or ``none`` to turn the gate off."""
    if text.strip().lower() in ("none", "off"):
        return None
    try:
        return number(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def int_or_none(text: str) -> Optional[int]:
    """A whole number, or ``none`` to turn the rule off."""
    if text.strip().lower() in ("none", "off"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'none', got {text!r}") from None
