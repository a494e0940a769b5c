"""Errors lzfs raises on purpose; each says what is wrong and, where it can, what to do."""

from __future__ import annotations


class LzfsError(Exception):
    """Base of every error meant for a user: the CLI prints it on one line and exits non-zero."""


class NotAStoreError(LzfsError):
    """The path is not an lzfs store (or mkfs was pointed at a non-empty directory)."""


class FormatVersionError(LzfsError):
    """The store was written by a newer lzfs; nothing is changed."""


class StoreBusyError(LzfsError):
    """Another process (a mounted daemon, fsck, gc) holds the store's lock."""


class CorruptDataError(LzfsError):
    """Stored bytes fail a check (magic, checksum, content hash): never returned as data."""


class ImageFormatError(LzfsError):
    """A CRIU image is truncated or not what its name says."""
