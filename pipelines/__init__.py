"""Entry points: ``build_corpus`` (and the trainers)."""
import logging

_NOISE = ("apitools not found", "Resource module is not available")


class _DropKnownNoise(logging.Filter):
    """Beam logs these on every import / bundle on machines without GCP clients; they mean nothing here."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(n in msg for n in _NOISE)


logging.getLogger().addFilter(_DropKnownNoise())
