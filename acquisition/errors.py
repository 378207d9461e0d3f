"""Why a source could not be fetched: errors that carry the reason its rejected row records.

Both derive from ``schemas.errors.SpeechmillError`` (``reason``, ``detail``, ``retryable``);
``str()`` reads ``"reason: detail"``. ``FetchError.transient`` is separate from ``retryable``:
a transient failure (timeout, reset, 5xx, 429) is tried again within the run, with backoff;
``retryable`` says whether the next run tries the source again once it has failed.
"""
from __future__ import annotations

from schemas.errors import SpeechmillError


class FetchError(SpeechmillError):
    """A source could not be fetched; ``transient`` failures are retried within the run."""

    reason = "acquire_error"
    tagged = True

    def __init__(self, reason: str, detail: str, transient: bool = False):
        super().__init__(detail, reason)
        self.transient = transient


class UnsafeURL(SpeechmillError):
    """A URL the network policy refuses: a private address, a bad or ambiguous URL, a scheme not fetched."""

    reason = "unsafe_url"
    tagged = True

    def __init__(self, reason: str, detail: str):
        super().__init__(detail, reason)
