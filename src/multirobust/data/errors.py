"""Exceptions raised by the dataset readers."""

from __future__ import annotations

__all__ = ["DataCorruptError", "DatasetNotFoundError"]


class DataCorruptError(ValueError):
    """A dataset file exists but is damaged: bad checksum, bad header, short payload, bad labels."""


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are missing and could not be downloaded."""
