"""What the bucket publishes, known without reading a manifest: the newest key of every snapshot
name (one listing of ``snapshots/``, at mount), and what changed since (the journal, at each
refresh), so that looking again costs what is new, not what is known.

Manifest keys sort by time only within a name (``snapshots/NAME/TIME...``), so "everything newer
than what I saw" is not one listing of them. Each publication and deletion therefore also puts
an empty **journal** object, after its manifest or tombstone, whose key starts with the time
of that PUT (on the object store's clock, as every key's time: clock.py) and names the key it
announces:

    journal/<UTC time>Z,<quoted name>,<manifest or tombstone file name>

A node lists ``journal/`` from the time of its last look minus ``WINDOW`` (a journal entry is
stamped just before its PUT, so it may appear that much later than its time says; and each
node reads the store's clock to about a second), skipping entries it has already read. Node
clocks need not agree: all of these times are the object store's. gc deletes journal entries older
than the grace period; a node whose last full listing is older than half of it lists
``snapshots/`` again instead. A publisher that dies between its manifest PUT and its journal
PUT leaves a snapshot that other nodes see at their next full listing, not sooner.

A full listing costs a LIST request per 1,000 keys, so whoever lists in full (gc, or a node
that found no fresh catalogue) writes what it found as the **catalogue**: one compressed
object with every name's newest key and the time the listing began. A mount reads it and the
journal since that time instead of listing, while the catalogue is younger than half the grace
period (the journal entries since it began are still there). It is never the source of truth:
a damaged or stale catalogue is ignored, and the next full listing replaces it.
"""

from __future__ import annotations

import json
import logging
import zlib

from lzfs.cluster import manifest
from lzfs.cluster.clock import BucketClock
from lzfs.objectstore.protocol import Backend, NoSuchObject, RemoteError

log = logging.getLogger(__name__)

JOURNAL = "journal/"
CATALOGUE = "catalogue.json.z"
CATALOGUE_FORMAT = "lzfs-catalogue/1"
WINDOW = 60.0  # seconds: how late a journal entry may appear after the time its key says


def write_catalogue(backend: Backend, newest: dict[bytes, str], listed: float) -> None:
    """Record a full listing that began at ``listed`` (failures are only logged: the
    catalogue is a shortcut, the next full listing tries again)."""
    body = {"format": CATALOGUE_FORMAT, "listed": listed, "keys": sorted(newest.values())}
    try:
        backend.put(CATALOGUE, zlib.compress(json.dumps(body).encode(), 6))
    except RemoteError as exc:
        log.warning("could not write the catalogue of %s: %s", backend.url, exc)


def read_catalogue(backend: Backend) -> tuple[float, dict[bytes, str]] | None:
    """(time its listing began, name -> newest key), or None when there is no usable one."""
    try:
        body = json.loads(zlib.decompress(backend.get(CATALOGUE)))
        if body.get("format") != CATALOGUE_FORMAT:
            return None
        return float(body["listed"]), manifest.newest_per_name(list(body["keys"]))
    except NoSuchObject:
        return None
    except (zlib.error, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the catalogue of %s: %s", backend.url, exc)
        return None


def journal_key(key: str, now_ns: int | None = None) -> str:
    """The journal entry announcing manifest or tombstone ``key``, stamped now (``now_ns``:
    on the object store's clock, clock.py)."""
    qname, _, file = key[len(manifest.PREFIX):].partition("/")
    return f"{JOURNAL}{manifest.stamp(now_ns)}Z,{qname},{file}"


def announced(jkey: str) -> str | None:
    """The manifest or tombstone key a journal entry announces (None: not an entry)."""
    parts = jkey[len(JOURNAL):].split(",", 2)
    if not jkey.startswith(JOURNAL) or len(parts) != 3:
        return None
    key = f"{manifest.PREFIX}{parts[1]}/{parts[2]}"
    return key if manifest.entry_of(key) is not None else None


class BucketView:
    """The newest manifest or tombstone key of each snapshot name, as far as this node knows,
    and where it stands in the journal. Blocking (network): run in a worker thread."""

    def __init__(self, backend: Backend, grace: float, clock: BucketClock) -> None:
        self.backend = backend
        self.grace = grace
        self.clock = clock  # every time here is the object store's
        self.newest: dict[bytes, str] = {}
        self.listed_at = 0.0     # wall time the last full listing began
        self.mark = 0.0          # wall time the last look began
        self._read: set[str] = set()  # journal entries within the window, already applied
        self.listings = 0        # LIST requests made (pages not counted separately)
        self.from_catalogue = False  # the last full view came from the catalogue

    def full(self) -> dict[bytes, str]:
        """Every name's newest manifest or tombstone key: from a fresh catalogue and the
        journal since it, else from a listing of every key (which then becomes the
        catalogue)."""
        t = self.clock.now()
        cat = read_catalogue(self.backend)
        self._read.clear()
        if cat is not None and t - cat[0] < self.grace / 2:
            self.listed_at = self.mark = cat[0]
            self.newest = cat[1]
            self.from_catalogue = True
            self.changes()
            return dict(self.newest)
        self.listings += 1
        self.newest = manifest.newest_per_name([o.key for o in
                                                self.backend.list(manifest.PREFIX)])
        self.listed_at = self.mark = t
        self.from_catalogue = False
        write_catalogue(self.backend, self.newest, t)
        return dict(self.newest)

    def changes(self) -> dict[bytes, str | None]:
        """Names whose newest key changed since the last look (None: no key left at all,
        seen only by a full listing), listing only the journal since then."""
        if self.clock.now() - self.listed_at > self.grace / 2:  # gc may have taken entries since
            old = self.newest
            new = self.full()
            out: dict[bytes, str | None] = {n: k for n, k in new.items() if old.get(n) != k}
            out.update((n, None) for n in old.keys() - new.keys())
            return out
        t = self.clock.now()
        start = f"{JOURNAL}{manifest.stamp(int((self.mark - WINDOW) * 1e9))}Z"
        self.listings += 1
        changed: dict[bytes, str | None] = {}
        fresh: set[str] = set()
        for o in self.backend.list(JOURNAL, start_after=start):
            fresh.add(o.key)
            if o.key in self._read:
                continue
            key = announced(o.key)
            entry = manifest.entry_of(key) if key is not None else None
            if key is None or entry is None:
                continue
            name = entry[0]
            if key > self.newest.get(name, ""):
                self.newest[name] = key
                changed[name] = key
        self._read = fresh  # entries before the window are never listed again
        self.mark = t
        return changed
