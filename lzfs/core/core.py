"""A mounted store without the kernel protocol: the store, the namespace, the frame cache, the
open file maps, and when they are committed, collected and purged.

fs.py translates FUSE requests into calls on this object and keeps only what the protocol itself
needs (file handles, lookup counts, errnos, attributes); collaborators (the `.lzfs` tree, the
cluster hooks) get this object or less, never the Operations. Nothing here imports pyfuse3:
the one thing the core must ask of the mount, to stop serving after a failed commit, is the
``stop`` callable it is given, so the core runs in a plain trio test.

Everything runs as trio tasks on one thread: SQLite is only touched from here and from the
handlers, compression and decompression run in worker threads started by the file maps.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from typing import Any

import trio

from lzfs.core.backing import Backing, NoPassthrough, Passthrough
from lzfs.core.filemap import FileMap
from lzfs.core.hooks import Hooks, LocalHooks
from lzfs.core.metrics import REFRESH, Metrics
from lzfs.core.options import MountOptions
from lzfs.core.policy import SETTLE_IDLE, STAGE_BACKLOG, STAGE_HEADROOM
from lzfs.core.prefetch import FrameCache
from lzfs.core.readmap import ReadWindows, Replier
from lzfs.criu.cow import read_page_by_page
from lzfs.criu.images import IMAGE_LIMIT
from lzfs.errors import CorruptDataError
from lzfs.store import codec
from lzfs.store.namespace import ROOT_INODE, FsError, Inode
from lzfs.store.space import SpaceGuard
from lzfs.store.store import Store
from lzfs.units import human, plural

log = logging.getLogger(__name__)
RESTORE_QUIET = 5.0  # seconds without a CRIU open after which a restore counts as done
DEFAULTS = MountOptions()



class Core:
    def __init__(self, store: Store, stop: Callable[[], None],
                 opts: MountOptions = DEFAULTS, *,
                 staging: bool = True,
                 invalidate: Callable[[int], None] = lambda ino: None,
                 hooks: Callable[[Core], Hooks] | None = None,
                 on_first_open: Callable[[], None] | None = None,
                 passthrough: Passthrough | None = None,
                 replier: Replier | None = None) -> None:
        """``stop`` ends the serving loop (pyfuse3.terminate under a mount). ``staging``:
        whether this store may stage at all (a cluster node's manifests name the frames it
        wrote, so it never does; ``opts.stage`` is the user's say). ``invalidate`` makes the
        kernel forget an inode's cached attributes (pyfuse3.invalidate_inode under a mount):
        a settled file's st_blocks changes, and du must not show the old figure. ``hooks``
        builds what a cluster node adds to the mount (LocalHooks: nothing). ``on_first_open``
        runs once, at the first open: by then the kernel has the mount's INIT reply, which
        would undo settings made earlier (the daemon sets the readahead there).
        ``passthrough`` registers staging files with the kernel (fuse/passthrough.py);
        ``replier`` answers READs of mapped files from the frame cache without the core
        (fuse/fastread.py, core/readmap.py)."""
        self.store = store
        self.stop = stop
        self.opts = opts
        self.invalidate = invalidate
        self.on_first_open = on_first_open
        self.passthrough = passthrough or NoPassthrough()
        self._passthrough_said = False
        self.commit_interval = opts.commit_interval
        self.settle_idle = SETTLE_IDLE if opts.settle_idle is None else opts.settle_idle
        if staging and opts.stage:
            store.stage_backlog = (STAGE_BACKLOG if opts.stage_backlog is None
                                   else opts.stage_backlog)
        self.space = SpaceGuard(store.root, opts.reserve_mb << 20)
        self.failed: BaseException | None = None  # a commit failed: stop, keep the last one
        self.ns = store.ns
        self.ns.ensure_root()
        self.cache = FrameCache(store, opts.cache_mb << 20)
        self.windows = ReadWindows(replier)
        self.windows.serve_from(self.cache.buffers)
        self.files: dict[int, FileMap] = {}
        # inodes whose bytes changed where the kernel's page cache of them could not see it
        # (through passthrough, to a staging file): their next cached open drops that cache
        self._kernel_cache_stale: set[int] = set()
        self._warmed: set[int] = set()  # snapshot directories restore_starts warmed
        self.last_scrub: dict[str, float] | None = None
        self.metrics = Metrics()
        self._remote_figures: dict[str, Any] | None = None  # for the scraper's thread
        self.metrics.watch(lambda: self._remote_figures)
        self._dumping: dict[int, float] = {}  # snapshot directory -> first image created
        self._restoring: dict[int, list[float]] = {}  # directory -> [started, last open]
        self.nursery: trio.Nursery | None = None
        self.gate = store.gate  # the store's: no frame is registered while a commit syncs
        self._committed_changes = -1
        # one gc at a time: a second one (lzfs gc while the committer's runs) would find the
        # first one's frames already collected and return before their space is given back
        self._gc_lock = trio.Lock()
        # (op, size rounded up to a power of two) -> count: what the kernel really sends us
        self.request_sizes: Counter[tuple[str, int]] = Counter()
        for ino in self.ns.orphans():
            log.info("removing orphan inode %d (unlinked while open before the last stop)", ino)
            self.purge(ino)
        self._recover_staging()
        self.store.commit()
        self.hooks: Hooks = LocalHooks() if hooks is None else hooks(self)

    def _recover_staging(self) -> None:
        """Staging files agree with their committed sizes (store/staging.py)."""
        staging = self.store.staging
        sizes = {ino: self.ns.get(ino).size for ino in staging.inodes()}
        for ino, size in staging.recover(sizes).items():
            log.warning("recovery: inode %d's staging file holds %d bytes of %d; the rest was "
                        "not on disk at the crash", ino, size, sizes[ino])
            self.ns.set_attrs(ino, size=size)

    # ---- lifecycle ---------------------------------------------------------------------------

    def attach(self, nursery: trio.Nursery) -> None:
        """Give background work (encoders, prefetch, commits) a nursery to run in."""
        self.nursery = nursery
        self.cache.nursery = nursery
        for fm in self.files.values():
            fm.nursery = nursery

    async def committer(self) -> None:
        """Commit every few seconds while anything changed; give space back at once when a
        deletion left frames nobody references."""
        while True:
            await trio.sleep(self.commit_interval)
            try:
                await self.commit()
                if self.store.garbage:
                    await self.gc()
            except Exception:
                log.exception("background commit failed")

    def _requests(self) -> int:
        return sum(self.request_sizes.values())

    def _busy_since(self, requests: int) -> bool:
        return self._requests() != requests

    async def scrubber(self) -> None:
        """Every ``opts.scrub_hours``: verify every snapshot (report/verify.py) on a worker
        thread of the lowest priority, through a read-only look of its own, and say what it
        found in the log and the figures (``scrub``)."""
        while self.opts.scrub_hours > 0:
            await trio.sleep(self.opts.scrub_hours * 3600)
            try:
                await self.commit()
                started = time.time()
                results = await trio.to_thread.run_sync(self._scrub_once)
            except Exception:
                log.exception("scrub failed")
                continue
            damaged = {p: v for r in results for p, v in r.damaged.items()}
            self.last_scrub = {"time": started, "seconds": round(time.time() - started, 1),
                               "snapshots": len(results),
                               "frames": sum(r.frames for r in results),
                               "bytes": sum(r.frame_bytes for r in results),
                               "damaged_files": len(damaged)}
            for path, ranges in damaged.items():
                log.error("scrub: %s is damaged at %s (reads there fail with EIO)", path,
                          ", ".join(f"{o}+{n}" for o, n in ranges))
            log.info("scrub: %s verified, %s, %s", plural(len(results), "snapshot"),
                     plural(sum(r.frames for r in results), "frame"),
                     "sound" if not damaged else plural(len(damaged), "damaged file"))

    def _scrub_once(self) -> list[Any]:
        from lzfs.cluster.attach import attach_readonly
        from lzfs.report.verify import lowest_priority, verify

        lowest_priority()  # this thread only: nice is per thread on Linux
        store = Store(self.store.root, readonly=True)
        node = attach_readonly(store)
        try:
            return [verify(store, ino, name.decode(errors="replace"))
                    for name, ino in store.ns.children(ROOT_INODE) if store.ns.get(ino).is_dir]
        finally:
            store.close()
            if node is not None:
                node.close()

    async def metrics_refresher(self, textfile: str | None = None) -> None:
        """Every metrics.REFRESH seconds, on this thread (they take SQL): the store's figures
        into the metrics; the restores CRIU has not touched for RESTORE_QUIET counted done;
        with ``textfile``, the metrics written there for node_exporter."""
        from prometheus_client import write_to_textfile

        while True:
            try:
                self.metrics.set_store(self.figures())
                self.hooks.tick()
                self._remote_figures = self.hooks.describe()
                self._restores_done()
                if textfile:
                    await trio.to_thread.run_sync(write_to_textfile, textfile,
                                                  self.metrics.registry)
            except Exception:
                log.exception("refreshing the metrics failed")
            await trio.sleep(REFRESH)

    # ---- dumps and restores as they happen (the log and the metrics) ----------------------

    def created(self, parent: int) -> None:
        """A file was created in ``parent``: a dump into it may be starting."""
        self._dumping.setdefault(parent, time.monotonic())

    def _dump_done(self, ino: int) -> None:
        """A writer closed ``ino``: when it is an inventory.img (CRIU writes it last), the
        dump of its directory is complete. One log line says what it cost."""
        entry = self.ns.dentry_of(ino)
        if entry is None or entry[1] != b"inventory.img":
            return
        parent = entry[0]
        started = self._dumping.pop(parent, None)
        seconds = time.monotonic() - started if started is not None else 0.0
        logical = stored = 0
        for _, child in self.ns.children(parent):
            node = self.ns.get(child)
            if node.is_reg:
                size, used = self.sizes(node)
                logical += size
                stored += used
        self.metrics.dumps.inc()
        self.metrics.dump_seconds.observe(seconds)
        self.metrics.set_store(self.figures())  # what the dump cost, at the next scrape
        log.info("snapshot %s complete: %s logical, %s stored%s, %.1f s",
                 self.ns.path_of(parent), human(logical), human(stored),
                 " (raw until settled)" if self.store.staging.inodes() else "", seconds)

    def _restores_done(self) -> None:
        now = time.monotonic()
        for d, (started, last) in list(self._restoring.items()):
            if now - last > RESTORE_QUIET:
                del self._restoring[d]
                self.metrics.restore_seconds.observe(last - started)

    async def settler(self) -> None:
        """Settle staged data (FileMap.settle) whenever no READ or WRITE came for SETTLE_IDLE
        seconds: a dump and a restore have the CPU to themselves, compression and dedup of
        what a dump staged run in the pauses between them, and stop when a request comes."""
        seen = -1
        while True:
            await trio.sleep(self.settle_idle)
            now = self._requests()
            if now != seen or self.failed is not None:
                seen = now
                continue
            try:
                await self.settle(busy=partial(self._busy_since, now))
            except Exception:
                log.exception("settling staged data failed")

    async def settle(self, busy: Callable[[], bool] = lambda: False) -> int:
        """Store again, compressed and deduplicated, what dumps staged in files nobody has
        open (until ``busy()``); returns how many files it settled (some or all of). gc then
        takes the staged frames."""
        done = 0
        for ino in dict.fromkeys(self.store.staging.inodes() + self.store.maps.staged_files()):
            if busy() or self.failed is not None:
                break
            fm = self.filemap(ino)
            try:
                if fm.opens == 0 and not fm.dirty and await fm.settle(busy):
                    done += 1
                    self.invalidate(ino)
            finally:
                self.drop_idle(ino)
        if done:
            log.info("settled staged data of %s (stored again, deduplicated and "
                     "compressed)", plural(done, "file"))
        return done

    async def gc(self) -> tuple[int, int]:
        """Collect frames nobody references and give their space back; returns (frames
        removed, bytes freed) once it is given back, also when another gc had collected them."""
        if self.hooks.publishing:
            return 0, 0  # after the upload (store.garbage stays set: the committer retries)
        async with self._gc_lock:
            removed, frames = self.store.collect_garbage()
            self.cache.drop(f[0] for f in frames)
            await self.commit()  # no committed row names those frames any more: punch them
            freed = await trio.to_thread.run_sync(self.store.punch, frames)
            self.metrics.gc_runs.inc()
            self.metrics.gc_freed.inc(freed)
        if removed or freed:
            log.info("gc: removed %s, gave back %s", plural(removed, "frame"), human(freed))
        return removed, freed

    async def commit(self) -> None:
        if self.failed is not None:
            raise FsError(errno.EIO)
        changes = self.store.db.conn.total_changes
        if changes == self._committed_changes:
            return
        try:
            # the bulk of the data goes to disk first, with the gate open: a commit in the
            # middle of a dump used to stall every writer for as long as its fsync took
            # (2 GiB staged: 5-6 s dumps instead of 2-3); under the gate only what came since
            await trio.to_thread.run_sync(self.store.packs.flush)
        except OSError as exc:  # the sync under the gate decides
            log.warning("writing packs ahead of a commit: %s", exc)
        try:
            await self._sync_staging()
        except OSError as exc:
            self._fail(exc)
        async with self.gate:
            try:
                await trio.to_thread.run_sync(self.store.sync_packs)
                self.store.commit_meta()
            except (sqlite3.Error, OSError) as exc:
                self._fail(exc)
            self._committed_changes = self.store.db.conn.total_changes
        self.store.staging.committed()

    async def _sync_staging(self) -> None:
        """Before a commit names them: every staging file's data on disk, its size in its
        inode row, and new staging files' names in their directory. The time the data took
        is the disk's rate (what staging through the kernel leaves the daemon to measure)."""
        backed = [fm for fm in self.files.values() if fm.backing is not None]
        for fm in backed:
            fm.flush_size()
        todo = [fm.backing for fm in backed if fm.backing is not None
                and (fm.opens or not fm.backing.synced)]
        fds = [b.dup() for b in todo]  # a settle may close a staging file meanwhile
        for b in todo:  # now, not after: a write during the sync makes it false again
            b.synced = True

        def sync() -> None:
            t = time.monotonic()
            nbytes = 0
            try:
                for fd in fds:
                    nbytes += os.fstat(fd).st_size
                    os.fdatasync(fd)
            finally:
                for fd in fds:
                    os.close(fd)
            self.store.staging.before_commit()
            self.store.pace.behind.disk.add(nbytes, time.monotonic() - t)

        await trio.to_thread.run_sync(sync)
        if todo or self.store.staging.inodes():
            self._committed_changes = -1  # sizes may have changed without a row changing

    def _fail(self, exc: BaseException) -> None:
        """A commit failed (disk error, or full despite the reserve). SQLite may have rolled
        back on its own, so what this daemon holds in memory can no longer be trusted: stop
        serving and keep the store exactly at its last commit (the next mount starts there)."""
        self.failed = exc
        log.critical("cannot commit (%s): unmounting; the store stays at its last commit", exc)
        self.stop()
        raise FsError(errno.EIO)

    async def shutdown(self) -> None:
        """Store every pending byte and commit: called after the kernel let go of the mount."""
        if self.failed is not None:
            return
        for ino, fm in list(self.files.items()):
            try:
                await fm.flush()
            except Exception:
                log.exception("inode %d: could not store its last bytes", ino)
        self.invalidate = lambda ino: None  # the kernel has let go: nothing to tell it
        if self.store.stage_backlog is not None:  # leave no staged data behind an unmount
            try:
                await self.settle()
                await self.gc()
            except Exception:
                log.exception("settling staged data at unmount failed (the next mount will)")
        await self.commit()
        await self.hooks.publish_pending()
        if self.request_sizes:
            log.info("request sizes: %s", ", ".join(
                f"{op} <={human(size)}: {n}" for (op, size), n in sorted(
                    self.request_sizes.items())))

    # ---- file maps ---------------------------------------------------------------------------

    def filemap(self, ino: int) -> FileMap:
        """The one FileMap of ``ino``, loaded on first use and kept while open or dirty."""
        fm = self.files.get(ino)
        if fm is None:
            node = self.ns.get(ino)
            fm = FileMap.load(ino, node.size, self.store, self.cache, self._persist_size,
                              node.stored)
            if self.store.staging.has(ino):
                fm.backing = Backing(ino, self.store.staging.open(ino))
                fm.backing.synced = True
            fm.nursery = self.nursery
            fm.windows = self.windows
            self.files[ino] = fm
        return fm

    def backing_for(self, ino: int, writable: bool) -> int | None:
        """The kernel backing id an open of ``ino`` (counted by ``opened``) is to pass through
        to, or None: the daemon serves it. A staged file always passes through (the kernel
        allows one way per file while it is open); an empty file opened for writing is staged
        when the kernel can pass it through and staging pays (``_stage_through_kernel``)."""
        fm = self.filemap(ino)
        if fm.backing is None:
            if not (writable and fm.opens == 1 and fm.live_size() == 0 and not fm.exts
                    and not fm.dirty and self._stage_through_kernel()):
                return None
            self.windows.forget(ino)
            fm.backing = Backing(ino, self.store.staging.create(ino))
            self.invalidate(ino)
        if fm.backing.backing_id is None:
            fm.backing.backing_id = self.passthrough.open(fm.backing.fd)
        if writable:
            self._kernel_cache_stale.add(ino)
        return fm.backing.backing_id

    def restore_starts(self, ino: int) -> None:
        """CRIU opened ``ino`` to read it: a restore of its snapshot starts. Have the disk
        read the snapshot's pages images from now on (FrameCache.stream), while CRIU reads
        its small images and builds the process tree: on slow storage that time is
        otherwise lost to the restore (it stood 0.5-0.8 s idle at 200 MB/s). Once per
        directory per mount."""
        entry = self.ns.dentry_of(ino)
        if entry is not None:
            now = time.monotonic()
            if entry[0] in self._restoring:
                self._restoring[entry[0]][1] = now
            else:
                self._restoring[entry[0]] = [now, now]
                self.metrics.restores.inc()
        if entry is None or entry[0] in self._warmed or self.nursery is None:
            return
        self._warmed.add(entry[0])
        frames: dict[int, None] = {}
        for name, child in self.ns.children(entry[0]):
            if name.startswith(b"pages-") and not self.store.staging.has(child):
                frames.update((r.frame, None) for r in self.store.maps.load(child)
                              if r.frame >= 0)
        if not frames:
            return
        self.store.know_frames(frames)
        locs = []
        for f in frames:
            with contextlib.suppress(CorruptDataError):  # lost: its reader gets the EIO
                loc = self.store.frame_loc(f)
                locs.append((loc.pack, loc.off, loc.rlen))
        self.cache.stream(locs)

    def kernel_cache_valid(self, ino: int) -> bool:
        """Whether the kernel may keep what it cached of ``ino`` for an open through the page
        cache (FOPEN_KEEP_CACHE): yes, unless its bytes changed through passthrough since the
        last such open (which then drops it). Every other change goes through the kernel."""
        stale = ino in self._kernel_cache_stale
        self._kernel_cache_stale.discard(ino)
        return not stale

    def time_the_disk(self) -> None:
        """Start timing the store's disk (store/pace.py, on a thread) where dumps may stage
        through the kernel: that is decided at a dump's first create, so the rate must be
        known by then. The kernel's passthrough is known only after FUSE's INIT: not asked."""
        if (self.opts.passthrough and self.store.stage_backlog is not None
                and self.space.free() > self.space.reserve + STAGE_HEADROOM):
            threading.Thread(target=self.store.pace.probe, args=(self.store.root,),
                             daemon=True, name="lzfs-disk-probe").start()

    def _stage_through_kernel(self) -> bool:
        """Whether a new file is written through the kernel to a staging file: the kernel and
        pyfuse3 can (said once in the log), the user let it (--no-passthrough, --no-stage), the
        store stages (not a cluster node), the disk takes raw bytes clearly faster than the
        encoder compresses them (store/pace.py), and there is room for the raw bytes."""
        if not self._passthrough_said:
            self._passthrough_said = True
            if self.passthrough.available():
                log.info("FUSE passthrough: on; dumps go to staging files at the disk's speed")
            else:
                log.info("FUSE passthrough: off (%s); dumps go through the daemon",
                         self.passthrough.why_not())
        return (self.passthrough.available() and self.opts.passthrough
                and self.store.stage_backlog is not None and self.store.pace.staging_pays()
                and self.space.free() > self.space.reserve + STAGE_HEADROOM)

    def _persist_size(self, ino: int, size: int, stored: int) -> None:
        self.ns.set_attrs(ino, size=size, stored=stored)

    def drop_idle(self, ino: int) -> None:
        fm = self.files.get(ino)
        if fm is not None and fm.opens == 0 and not fm.dirty and not fm.settling:
            if fm.backing is not None and not fm.backing.synced:
                return  # kept until a commit has synced its staging file
            del self.files[ino]
            self.windows.forget(ino)
            fm.release_backing()

    def sizes(self, node: Inode) -> tuple[int, int]:
        """(size, stored bytes) of a file: its open FileMap's, which may run ahead of the row
        (a staged file's is its staging file's, which the kernel writes without telling)."""
        fm = self.files.get(node.id)
        return (fm.live_size(), int(fm.stored)) if fm is not None else (node.size, node.stored)

    def file_figures(self, node: Inode) -> dict[str, float]:
        return self.store.file_figures(node.id, self.sizes(node)[0])

    async def truncate(self, ino: int, size: int) -> None:
        await self.filemap(ino).truncate(size)
        self.drop_idle(ino)

    def opened(self, ino: int) -> FileMap:
        """Count an open of ``ino``; done before any await so that the FileMap is not dropped
        as idle meanwhile."""
        if self.on_first_open is not None:
            tune, self.on_first_open = self.on_first_open, None
            tune()
        fm = self.filemap(ino)
        fm.opens += 1
        fm.open_gen += 1
        return fm

    async def closed(self, ino: int, writable: bool) -> None:
        """The end of an open: store a writer's bytes, let the kernel's backing file go with
        the file's last open, let an idle map go."""
        fm = self.files.get(ino)
        if fm is None:
            return
        fm.opens -= 1
        if fm.opens == 0 and fm.backing is not None and fm.backing.backing_id is not None:
            backing_id, fm.backing.backing_id = fm.backing.backing_id, None
            self.passthrough.close(backing_id)
        if writable:
            await fm.flush()
            self._dump_done(ino)
        self.drop_idle(ino)

    async def punch(self, ino: int, off: int, length: int) -> None:
        await self.filemap(ino).punch(off, length)

    def unopened(self, ino: int) -> None:
        """An open that failed half way: undo ``opened`` without storing anything."""
        fm = self.files.get(ino)
        if fm is not None:
            fm.opens -= 1
            self.drop_idle(ino)

    def admit(self, nbytes: int) -> None:
        """Refuse (ENOSPC) a write that would eat into the disk's reserve."""
        self.space.admit(nbytes, self._unpacked)

    def _unpacked(self) -> int:
        return sum(fm.pending_bytes for fm in self.files.values())

    async def flush_subtree(self, ino: int) -> None:
        """Store the pending bytes of every open file at or under ``ino``."""
        stack = [ino]
        while stack:
            d = stack.pop()
            fm = self.files.get(d)
            if fm is not None:
                await fm.flush()
            stack.extend(child for _, child in self.ns.children(d))

    # ---- nameless inodes ---------------------------------------------------------------------

    def purge_if_unused(self, ino: int) -> None:
        """Drop ``ino`` if it has no name left and is not open. The caller has checked that
        the kernel holds no lookup of it (only the adapter counts those)."""
        fm = self.files.get(ino)
        if fm is not None and fm.opens > 0:
            return
        try:
            node = self.ns.get(ino)
        except FsError:
            return
        if node.nlink == 0:
            self.purge(ino)

    def purge(self, ino: int) -> None:
        """Drop a nameless inode with no handles: its runs (through the block maps, which
        count references), then the row."""
        self.store.maps.purge(ino)  # wakes gc: the committer gives the space back
        if self.store.staging.has(ino):
            self.store.staging.remove(ino)
        self.ns.delete(ino)
        self.windows.forget(ino)
        fm = self.files.pop(ino, None)
        if fm is not None:
            fm.gone = True
            fm.release_backing()

    # ---- figures and choices -------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        """Store-wide figures with this mount's cache and request counters (.lzfs/stats)."""
        st: dict[str, Any] = asdict(self.store.stats())
        st["cache"] = self.cache.describe()
        st["fast_reads"] = self.windows.figures()
        if self.store.stage_backlog is not None:
            st["pace"] = self.store.pace.describe()
        st["open_files"] = len(self.files)
        if self.last_scrub is not None:
            st["scrub"] = self.last_scrub
        st["passthrough"] = ("on" if self.passthrough.available() and self.opts.passthrough
                             else "off: " + ("--no-passthrough" if self.passthrough.available()
                                             else self.passthrough.why_not()))
        st["decoder"] = "native" if codec.NATIVE else "python"
        st["requests"] = {f"{op}<={size}": n
                          for (op, size), n in sorted(self.request_sizes.items())}
        remote = self.hooks.describe()
        if remote is not None:
            st["remote"] = remote
        return st

    async def read_page_by_page(self, ino: int) -> bool:
        """A pages image that CRIU will read one page at a time (a forked worker's memory,
        shared copy-on-write with its parent): served through the page cache, where the
        kernel's readahead batches those reads, instead of one FUSE round trip per page
        (lzfs/criu/cow.py has the measurements)."""
        entry = self.ns.dentry_of(ino)
        if entry is None:
            return False
        parent, name = entry
        loaded: list[int] = []

        async def sibling(n: str, limit: int | None = None) -> bytes | None:
            try:
                i = self.ns.lookup(parent, n.encode())
                node = self.ns.get(i)
            except FsError:
                return None
            if not node.is_reg or node.size > IMAGE_LIMIT:
                return None
            if i not in self.files:
                loaded.append(i)
            size = node.size if limit is None else min(node.size, limit)
            return bytes(await self.filemap(i).read(0, size))

        try:
            return await read_page_by_page(name, sibling)
        except Exception as exc:  # noqa: BLE001 - any failure (damaged or remote images,
            # the database) costs speed only, never the open itself
            log.warning("%s: cannot tell how CRIU will read it (%s); using direct_io",
                        self.ns.path_of(ino), exc)
            return False
        finally:
            for i in loaded:  # the images read here were not opened
                self.drop_idle(i)
