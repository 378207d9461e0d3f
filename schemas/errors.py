"""The one base of errors that stand for a reason: why a source, a line or a model could not be used.

Every such error carries ``reason`` (the machine tag written to rejected rows and source rows),
``detail`` (one line for the user) and ``retryable`` (whether the next run tries the source again,
following ``schemas.outcomes``). Callers decide what to do from the type and these attributes,
never from the text of the message.

``str(error)`` stays what each error showed before: ``"reason: detail"`` for the errors of one
source (fetch, network policy, decode), the detail alone for the errors a user reads as a sentence
(a sources file, a feed, a model that does not load).
"""
from __future__ import annotations

from typing import Optional

from schemas.outcomes import retryable as retryable_reason


class SpeechmillError(Exception):
    """A failure with a reason; subclasses name their default ``reason``."""

    reason: str = "error"
    tagged: bool = False  # str() is "reason: detail" rather than the detail alone

    def __init__(self, detail: str, reason: Optional[str] = None, retryable: Optional[bool] = None):
        self.reason = reason or type(self).reason
        self.detail = detail
        self.retryable = retryable_reason(self.reason) if retryable is None else retryable
        super().__init__(f"{self.reason}: {detail}" if self.tagged else detail)
