"""Exports of a finished corpus into other tools' formats (Lhotse Shar)."""
