"""A random-operations exerciser: one file under test, driven through a target (a real FUSE
mount, or the Operations layer without the kernel), checked against an in-memory model after
every read and in full after every remount.

Two silent corruptions (a page of zeros lost when the file ended in a partial page, stale bytes
after mapped writes and truncates) went unseen because nothing mixed overwrites, truncates and
mapped writes at random; fsx, the classic exerciser, found the second. This is ours, with the
operations lzfs has that fsx lacks (settling staged data, gc, remounts, renames and links of the
file under test, an object-store node).

Operations are plain tuples (JSON-able), generated from a seed and the model's state but
carrying absolute values, so a failing sequence replays on its own and shrinks by dropping
operations (``shrink``). ``Target`` (exercise_targets.py) says how each one reaches lzfs.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

PAGE = 4096
FRAME = 256 << 10  # codec.FRAME_MAX: runs never span frames, so borders matter
MAX_SIZE = 3 << 20  # the file under test stays small enough to check whole, often

Op = tuple[Any, ...]

KINDS = ("rand", "zero", "pages", "repeat", "text", "copy")

# what each operation weighs when drawn; "check" reads the whole file back
WEIGHTS: dict[str, int] = {
    "write": 30, "mwrite": 10, "read": 14, "mread": 6, "truncate": 8, "fsync": 4,
    "reopen": 3, "retrunc": 1, "rename": 2, "link": 2, "unlink": 2, "remount": 1, "settle": 2,
    "pause": 1, "check": 3,
}


def op_data(kind: str, n: int, seed: int, model: bytes | bytearray) -> bytes:
    """The bytes an operation writes: random, all zero, page-patterned (zero pages, random
    pages and repeats, as a pages image holds), one page repeated, text, or a copy of bytes
    the file holds already (content that dedups against itself)."""
    rnd = random.Random(seed)
    if kind == "zero":
        return bytes(n)
    if kind == "text":
        return (b"restore me %d " % seed * (n // 12 + 1))[:n]
    if kind == "pages":
        pool = [rnd.randbytes(PAGE) for _ in range(3)]
        out = b"".join(bytes(PAGE) if (r := rnd.random()) < 0.3 else
                       pool[rnd.randrange(3)] if r < 0.5 else rnd.randbytes(PAGE)
                       for _ in range(n // PAGE + 1))
        return out[:n]
    if kind == "repeat":
        return (rnd.randbytes(PAGE) * (n // PAGE + 1))[:n]
    if kind == "copy" and model:
        src = seed % len(model)
        chunk = bytes(model[src:src + n])
        return (chunk + rnd.randbytes(n - len(chunk)))[:n]
    return rnd.randbytes(n)


@dataclass
class Model:
    """What the file under test must hold, and the names it has (all in one directory)."""

    data: bytearray = field(default_factory=bytearray)
    names: list[str] = field(default_factory=lambda: ["f0"])
    counter: int = 0  # for fresh names

    def copy(self) -> Model:
        return Model(bytearray(self.data), list(self.names), self.counter)

    def apply(self, op: Op) -> None:
        kind = op[0]
        if kind in ("write", "mwrite"):
            _, off, n, dkind, seed = op
            payload = op_data(dkind, n, seed, self.data)
            if off > len(self.data):
                self.data.extend(bytes(off - len(self.data)))
            self.data[off:off + n] = payload
        elif kind == "retrunc":
            del self.data[:]
        elif kind == "truncate":
            size = op[1]
            del self.data[size:]
            self.data.extend(bytes(size - len(self.data)))
        elif kind == "rename":
            self.names[0] = op[1]
        elif kind == "link":
            self.names.append(op[1])
        elif kind == "unlink" and op[1] in self.names and len(self.names) > 1:
            self.names.remove(op[1])


class Target(Protocol):
    """How operations reach lzfs. Offsets and sizes are absolute; a mapped write gets the
    pages the kernel would write back (``pages``: the file's bytes over the touched pages
    once written, clamped to its size), which a target without a kernel sends as WRITEs.
    ``remount`` runs fsck on the store while it is down and raises Mismatch if it is not
    clean; ``verify`` says what is wrong with the open file's runs, where a target can see
    them (bytes that read right by luck over overlapping runs are still a bug)."""

    def open(self, name: str, truncate: bool = False) -> None: ...
    def close(self) -> None: ...
    def write(self, off: int, data: bytes) -> None: ...
    def mwrite(self, off: int, data: bytes, new_size: int, lo: int, pages: bytes) -> None: ...
    def read(self, off: int, n: int) -> bytes: ...
    def mread(self, off: int, n: int, size: int) -> bytes: ...
    def truncate(self, size: int) -> None: ...
    def fsync(self) -> None: ...
    def size(self) -> int: ...
    def rename(self, old: str, new: str) -> None: ...
    def link(self, old: str, new: str) -> None: ...
    def unlink(self, name: str) -> None: ...
    def listdir(self) -> list[str]: ...
    def remount(self) -> None: ...
    def settle(self) -> None: ...
    def pause(self, seconds: float) -> None: ...
    def read_file(self, name: str) -> bytes: ...
    def verify(self) -> list[str]: ...


class Mismatch(AssertionError):
    """What the file held differs from the model."""


def _where(got: bytes, want: bytes) -> str:
    if len(got) != len(want):
        return f"length {len(got)}, expected {len(want)}"
    first = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
    return f"first differing byte at +{first:#x}: {got[first:first + 8].hex()} instead of " \
           f"{want[first:first + 8].hex()}"


def expect(what: str, got: bytes, want: bytes | bytearray) -> None:
    if got != want:
        raise Mismatch(f"{what}: {_where(bytes(got), bytes(want))}")


# ---- drawing operations ------------------------------------------------------------------


@dataclass(frozen=True)
class Mix:
    """Which operations a run draws: ``crash`` keeps to ones that reach lzfs as one request
    each (a kill in their middle leaves the state before or after them); ``node`` says the
    target is an object-store node."""

    weights: dict[str, int] = field(default_factory=lambda: dict(WEIGHTS))
    max_size: int = MAX_SIZE
    crash: bool = False


def _offset(rnd: random.Random, size: int, max_size: int) -> int:
    """Offsets that like borders: pages, frames, the end of the file, just past it."""
    r = rnd.random()
    if r < 0.35 and size:
        border = rnd.choice((PAGE, FRAME)) * rnd.randrange(0, size // PAGE + 2)
        off = border + rnd.choice((0, 0, 0, -1, 1, -17, 100, PAGE - 1))
    elif r < 0.5:
        off = size + rnd.choice((0, 0, 1, PAGE, rnd.randrange(1, 300_000)))
    else:
        off = rnd.randrange(0, max(size, 1) + PAGE)
    return min(max(off, 0), max_size)


def _length(rnd: random.Random, crash: bool) -> int:
    r = rnd.random()
    if r < 0.3:
        n = rnd.choice((1, 7, 100, PAGE - 1, PAGE, PAGE + 1, 2 * PAGE, 3 * PAGE + 5))
    elif r < 0.6:
        n = PAGE * rnd.randrange(1, 40)
    else:
        n = rnd.randrange(1, 400_000)
    return min(n, 60_000) if crash else n


def draw(rnd: random.Random, model: Model, mix: Mix) -> Op:
    names, weights = zip(*mix.weights.items(), strict=True)
    kind = rnd.choices(names, weights)[0]
    size = len(model.data)
    if kind in ("write", "mwrite"):
        off = _offset(rnd, size, mix.max_size)
        n = min(_length(rnd, mix.crash), mix.max_size - off) or 1
        if kind == "mwrite" and mix.crash:
            n = min(n, PAGE - off % PAGE)  # one page: written back as one request
        return (kind, off, n, rnd.choice(KINDS), rnd.randrange(1 << 30))
    if kind in ("read", "mread"):
        return (kind, _offset(rnd, size, mix.max_size), _length(rnd, False))
    if kind == "truncate":
        r = rnd.random()
        if r < 0.45:
            new = rnd.randrange(0, size + 1)
        elif r < 0.6 and size:
            new = size - size % PAGE + rnd.choice((0, 1, PAGE - 1))
        else:
            new = min(size + rnd.randrange(1, 600_000), mix.max_size)
        return ("truncate", new)
    if kind == "rename":
        return ("rename", f"f{model.counter + 1}")
    if kind == "link":
        return ("link", f"f{model.counter + 1}")
    if kind == "unlink":
        return ("unlink", rnd.choice(model.names))
    if kind == "pause":
        return ("pause", rnd.choice((0.05, 0.3, 1.2)))
    return (kind,)


# ---- running them ------------------------------------------------------------------------


def _span(off: int, n: int, size: int) -> tuple[int, int]:
    """The pages a mapped write of [off, off+n) dirties, clamped to the file's size."""
    return off - off % PAGE, min(-(-(off + n) // PAGE) * PAGE, size)


def perform(target: Target, model: Model, op: Op, rnd: random.Random  # noqa: C901 - one
            ) -> None:  # branch per operation, read side by side with Model.apply
    """Do ``op`` on the target, check what it returns, and move the model along."""
    kind = op[0]
    data = model.data
    if kind == "write":
        _, off, n, dkind, seed = op
        target.write(off, op_data(dkind, n, seed, data))
    elif kind == "mwrite":
        _, off, n, dkind, seed = op
        payload = op_data(dkind, n, seed, data)
        after = model.copy()
        after.apply(op)
        lo, hi = _span(off, n, len(after.data))
        target.mwrite(off, payload, len(after.data), lo, bytes(after.data[lo:hi]))
    elif kind == "read":
        _, off, n = op
        expect(f"read of {n} at {off:#x}", target.read(off, n), data[off:off + n])
    elif kind == "mread":
        _, off, n = op
        if off < len(data):
            expect(f"mapped read of {n} at {off:#x}", target.mread(off, n, len(data)),
                   data[off:off + n])
    elif kind == "truncate":
        target.truncate(op[1])
    elif kind == "fsync":
        target.fsync()
    elif kind == "reopen":
        target.close()
        target.open(model.names[0])
    elif kind == "retrunc":  # opened again with O_TRUNC, as CRIU opens an image it writes
        target.close()
        target.open(model.names[0], truncate=True)
    elif kind == "rename":
        model.counter += 1
        target.rename(model.names[0], op[1])
    elif kind == "link":
        model.counter += 1
        target.link(model.names[0], op[1])
    elif kind == "unlink":
        if op[1] not in model.names or len(model.names) == 1:
            return
        target.unlink(op[1])
    elif kind == "remount":
        target.close()
        target.remount()
        check_whole(target, model, "after a remount")
        target.open(model.names[0])
    elif kind == "settle":
        target.close()
        target.settle()
        target.open(model.names[0])
    elif kind == "pause":
        target.close()
        target.pause(op[1])
        target.open(model.names[0])
    elif kind == "check":
        check_whole(target, model, "whole file")
    model.apply(op)
    if kind in ("write", "mwrite", "truncate", "retrunc"):
        size = target.size()
        if size != len(model.data):
            raise Mismatch(f"size {size} after {kind}, expected {len(model.data)}")
        broken = target.verify()
        if broken:
            raise Mismatch(f"after {kind}: " + "; ".join(broken))


def check_whole(target: Target, model: Model, why: str) -> None:
    listed = sorted(target.listdir())
    if listed != sorted(model.names):
        raise Mismatch(f"{why}: directory holds {listed}, expected {sorted(model.names)}")
    for name in model.names:  # every hard link reads the same bytes
        expect(f"{why}: {name}", target.read_file(name), model.data)


@dataclass
class Failure:
    seed: int
    ops: list[Op]  # the operations up to and including the failing one
    error: str

    def describe(self) -> str:
        return (f"seed {self.seed}: {self.error}\n"
                f"after {len(self.ops)} operations; the last ones:\n"
                + "\n".join(f"  {json.dumps(o)}" for o in self.ops[-12:]))


def run_ops(target: Target, ops: Sequence[Op], seed: int = 0) -> Failure | None:
    """Replay ``ops`` on a fresh file; the first failure, or None."""
    model = Model()
    rnd = random.Random(seed)
    done: list[Op] = []
    target.open(model.names[0])
    try:
        for op in ops:
            done.append(op)
            perform(target, model, op, rnd)
        done.append(("check",))
        check_whole(target, model, "at the end")
    except (Mismatch, OSError) as exc:
        return Failure(seed, done, _short(exc))
    finally:
        _quietly(target.close)
    return None


def run_seed(target: Target, seed: int, count: int, mix: Mix | None = None
             ) -> tuple[list[Op], Failure | None]:
    """Draw and run ``count`` operations from ``seed``: the operations and the first failure."""
    mix = mix or Mix()
    rnd = random.Random(seed)
    model = Model()
    ops: list[Op] = []
    target.open(model.names[0])
    try:
        for _ in range(count):
            op = draw(rnd, model, mix)
            ops.append(op)
            perform(target, model, op, rnd)
        ops.append(("check",))
        check_whole(target, model, "at the end")
    except (Mismatch, OSError) as exc:
        return ops, Failure(seed, ops, _short(exc))
    finally:
        _quietly(target.close)
    return ops, None


def shrink(fails: Callable[[list[Op]], bool], ops: list[Op], budget: float = 600.0
           ) -> list[Op]:
    """The shortest sub-sequence of ``ops`` that still fails, found by dropping chunks of
    halving size (delta debugging, simplified) until none can go or ``budget`` seconds
    pass."""
    deadline = time.monotonic() + budget
    chunk = max(len(ops) // 2, 1)
    while chunk >= 1 and time.monotonic() < deadline:
        i, dropped = 0, False
        while i < len(ops) and time.monotonic() < deadline:
            trial = ops[:i] + ops[i + chunk:]
            if trial and fails(trial):
                ops, dropped = trial, True
            else:
                i += chunk
        if not dropped:
            chunk //= 2
    return ops


def _short(exc: BaseException) -> str:
    if isinstance(exc, Mismatch):
        return str(exc)
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _quietly(fn: Callable[[], object]) -> None:
    with contextlib.suppress(OSError):
        fn()


# ---- crashes -----------------------------------------------------------------------------

# the operations a kill may interrupt: each reaches the daemon as one request (the crash mix
# keeps writes under 16 pages and mapped writes to one page inside the file), so the store
# holds the state before it or after it, never a mix
ONE_REQUEST = {"write", "mwrite", "truncate", "fsync", "rename", "link", "unlink", "settle",
               "read", "mread", "retrunc"}
CRASH_WEIGHTS = {k: v for k, v in WEIGHTS.items() if k not in ("remount", "check")}
# what a crash run may kill the daemon in the middle of: not a mapped read or write, whose page
# fault on a dead daemon is SIGBUS, which kills the exerciser itself, not an error it can check
# (a soak died so, 2026-12-07); their requests still meet a kill at a random moment after them
KILLED_IN_FLIGHT = ONE_REQUEST - {"mread", "mwrite"}


class Crashable(Target, Protocol):
    def kill(self) -> None: ...
    def recover(self) -> None: ...
    def fsck_clean(self) -> None: ...


def _matches(got_names: list[str], got: bytes, history: Sequence[Model],
             names_with_content: bool = True) -> Model | None:
    """The state, among those the file went through since its last fsync, that the
    recovered file shows: the same names, and the same bytes up to the recovered length,
    where that length is no shorter than the shortest state before it (a commit stores a
    file's size only up to the appends it has encoded: a crash may cut an append that was
    still pending, never bytes that were stored). With ``names_with_content`` False the
    names may come from another of those states than the bytes: what a file written through
    FUSE passthrough shows, whose bytes reach its staging file at once while names wait for
    the next commit. Returns the state of the bytes."""
    shortest = None
    found = None
    for state in history:
        n = len(state.data)
        shortest = n if shortest is None else min(shortest, n)
        if shortest <= len(got) <= n and got == bytes(state.data[:len(got)]) and (
                not names_with_content or sorted(got_names) == sorted(state.names)):
            found = state
            break
    if found is None or names_with_content:
        return found
    named = [s for s in history if sorted(got_names) == sorted(s.names)]
    return Model(found.data, named[-1].names, found.counter) if named else None


def run_crash_seed(target: Crashable, seed: int, kills: int, mix: Mix | None = None,
                   max_ops: int = 30, names_with_content: bool = True
                   ) -> tuple[int, Failure | None]:
    """``kills`` rounds of: random operations, then SIGKILL of the daemon, either in the
    middle of a one-request operation or at a random moment after one (while it encodes,
    commits, settles or collects in the background), then a remount. Each time the file
    must hold one of the states it went through since its last fsync (``_matches``), and
    fsck must find the store clean. Returns the operations run and the first failure."""
    mix = mix or Mix(weights=dict(CRASH_WEIGHTS), crash=True)
    rnd = random.Random(seed)
    model = Model()
    ops: list[Op] = []
    count = 0
    try:
        target.open(model.names[0])
        target.fsync()
        for _ in range(kills):
            history = [model.copy()]
            n = rnd.randrange(1, max_ops)
            in_flight = rnd.random() < 0.4
            for i in range(n):
                op = draw(rnd, model, mix)
                if op[0] == "mwrite" and op[1] + op[2] > len(model.data):
                    op = ("write", *op[1:])  # a mapped write must not extend: two requests
                ops.append(op)
                count += 1
                if i == n - 1 and in_flight and op[0] in KILLED_IN_FLIGHT:
                    after = model.copy()
                    after.apply(op)
                    if op[0] in ("rename", "link"):
                        after.counter += 1
                    killer = threading.Timer(rnd.uniform(0, 0.004), target.kill)
                    killer.start()
                    # the daemon goes away under it: either state may be on disk
                    with contextlib.suppress(OSError, Mismatch):
                        perform(target, model, op, rnd)
                    killer.join()
                    history.append(after)
                    break
                perform(target, model, op, rnd)
                history = [model.copy()] if op[0] == "fsync" else [*history, model.copy()]
            else:
                time.sleep(rnd.choice((0, 0.01, 0.1, 0.4, 1.1)))
                target.kill()
            ops.append(("crash",))
            target.recover()
            names = target.listdir()
            got = target.read_file(names[0]) if names else b""
            state = _matches(names, got, history, names_with_content)
            if state is None:
                raise Mismatch(f"after a crash the file holds {len(got)} bytes named {names}, "
                               f"which is none of the {len(history)} states since its last "
                               f"fsync (sizes {[len(s.data) for s in history]})")
            target.fsck_clean()
            model = state.copy()
            del model.data[len(got):]
            model.counter = max(s.counter for s in history)  # names used stay used
            target.open(model.names[0])
            target.fsync()
    except (Mismatch, OSError) as exc:
        return count, Failure(seed, ops, _short(exc))
    finally:
        _quietly(target.close)
    return count, None
