"""Dedup against the whole bucket on a mounted node: the store's supplier (store/index.py).

When a dump's pages miss the node's own index, their hooks are looked up in the bucket's
published index (hookindex.py); each manifest found is fetched once and its frames added to
the working store (``Exchange.adopt``), and the store matches the batch again. From then on
the node's own index finds the rest of that snapshot's pages as the dump goes on, so a model
served from any snapshot in the bucket costs one manifest GET here, not its bytes again.

What it costs a dump that finds nothing (new data): a vectorised lookup per batch in memory.
The index is loaded at the first miss after mount and looked at again at most every
``hookindex.RELOAD_S`` seconds; a shard of the base when a hook of its range is first asked
for. When the object store fails, the dump goes on and stores its pages (logged once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import trio

from lzfs.cluster import hookindex
from lzfs.cluster.exchange import Exchange
from lzfs.errors import CorruptDataError, LzfsError

log = logging.getLogger(__name__)

PER_BATCH = 4  # manifests fetched for one batch at most: a batch is 1 MiB of pages
# Adopted frames stay pinned this long after their adoption (or the last dump that used the
# index), then go with the store's next gc unless a file references them by then. Held, the
# store's gc cannot take them from under a dump; released, they cannot outlive, unnoticed, a
# snapshot deleted from the bucket (whose packs go one grace period, 24 h, after it).
HOLD_S = 600.0


class BucketDedup:
    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.index = hookindex.BucketIndex(exchange.backend)
        self._lock = trio.Lock()
        self._tried: dict[str, float] = {}  # manifest key -> when it was fetched (or failed)
        self._failing = False  # the object store failed: say so once, until it answers
        self.adopted_manifests = 0
        self.adopted_frames = 0
        self._held: list[int] = []  # adopted frames, pinned in the store
        self._held_since = 0.0  # last adoption or index lookup that found something
        # frames a previous mount adopted and no file uses: the first gc takes them
        exchange.store.maps.garbage = True

    async def supply(self, missing: Sequence[bytes]) -> None:
        keys = hookindex.hook_keys_of(missing)
        if not len(keys):
            return
        async with self._lock:
            try:
                if self.index.stale():
                    await trio.to_thread.run_sync(self.index.load)
                found = await trio.to_thread.run_sync(self.index.find, keys)
                self._failing = False
            except LzfsError as exc:
                self.index.view.at = time.monotonic()  # not again before RELOAD_S
                if not self._failing:
                    log.warning("cannot read the bucket's page index (%s): this dump "
                                "deduplicates against this node's snapshots only", exc)
                self._failing = True
                return
            now = time.monotonic()
            if found:
                self._held_since = now  # a dump is using them: keep holding
            todo = [m for m in found if now - self._tried.get(m, -1e9) > hookindex.RELOAD_S]
            for mkey in todo[:PER_BATCH]:
                self._tried[mkey] = now
                try:
                    doc = await trio.to_thread.run_sync(self.exchange.fetch, mkey)
                except LzfsError as exc:  # deleted since the index was written, or damaged
                    level = logging.DEBUG if not isinstance(exc, CorruptDataError) else \
                        logging.WARNING
                    log.log(level, "page index names %s: %s", mkey, exc)
                    continue
                added = self.exchange.adopt(doc)
                self.exchange.store.pin(added)  # until release(): gc must not take them
                self._held += added
                self.adopted_manifests += 1
                self.adopted_frames += len(added)
                log.info("deduplicating against %s (%d frames) through the bucket's page "
                         "index", mkey, len(added))

    def tick(self) -> None:
        """Release adopted frames once no dump has used the index for HOLD_S: the store's
        next gc drops those no file references."""
        if self._held and time.monotonic() - self._held_since > HOLD_S \
                and not self._lock.locked():
            self.release()

    def release(self) -> None:
        store = self.exchange.store
        store.unpin(self._held)
        self._held = []
        store.maps.garbage = True

    def describe(self) -> dict[str, Any]:
        return {**self.index.describe(), "index_manifests_adopted": self.adopted_manifests,
                "index_frames_adopted": self.adopted_frames,
                "index_frames_held": len(self._held)}
