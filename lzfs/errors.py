"""Errors lzfs raises on purpose; each says what is wrong and, where it can, what to do."""

from __future__ import annotations


class LzfsError(Exception):
    """Base of every error meant for a user: the CLI prints it on one line and exits non-zero."""


class NotAStoreError(LzfsError):
    pass


class FormatVersionError(LzfsError):
    pass


class StoreBusyError(LzfsError):
    pass


class CorruptDataError(LzfsError):
    """Stored bytes fail a check (magic, checksum, content hash): never returned as data."""


class ImageFormatError(LzfsError):
    """A CRIU image is truncated or not what its name says."""
