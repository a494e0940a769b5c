"""Tables for people: human units, readable widths (rich). JSON is in report.py."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from lzfs.units import human, rate


def _shared_with(d: dict[str, float], limit: int = 3) -> str:
    top = sorted(d.items(), key=lambda kv: -kv[1])[:limit]
    more = len(d) - len(top)
    text = ", ".join(f"{escape(k)} {human(v)}" for k, v in top)
    return text + (f" +{more} more" if more > 0 else "")


STATS_SCHEMA = "lzfs-stats/1"  # `lzfs stats --json`, .lzfs/stats.json (docs/report.md)
MATRIX_MAX = 24  # snapshots beyond which the matrix is too wide to print (JSON has it)


def console_for_stdout() -> Console:
    """The terminal's width on a terminal; 160 columns into a file or a pipe, where nothing
    reflows a table."""
    return Console() if sys.stdout.isatty() else Console(width=160)


def _tail(text: str, width: int) -> str:
    """The end of a long name (a mapped file's path), said to be cut: '...' first."""
    return text if len(text) <= width else "\u2026" + text[-(width - 1):]


def when(t: float | None) -> str:
    """A time in the local zone, to the minute: a report's created column."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else ""


def print_report(data: dict, console: Console | None = None  # noqa: C901 - a table
                 ) -> None:  # per kind of report, with the same totals
    console = console or console_for_stdout()
    if data["by"] == "region":
        for snap in data["snapshots"]:
            t = Table(title=f"memory regions of {snap['snapshot']} (bytes of pages, before "
                            f"compression)", title_justify="left")
            for col in ("region", "logical", "zero", "unique", "shared", "shared with"):
                t.add_column(col, justify="left" if col in ("region", "shared with") else "right")
            for r in snap["regions"]:
                t.add_row(escape(_tail(r["region"], 60)), human(r["logical"]), human(r["zero"]),
                          human(r["unique_raw"]), human(r["shared_raw"]),
                          _shared_with(r["shared_with"]))
            console.print(t)
        for err in data.get("errors", []):
            console.print(f"[red]cannot parse:[/red] {err}")
        return
    key = "snapshot" if data["by"] == "snapshot" else "file"
    of = f"{data['store']}" + (f", snapshot {data['snapshot']}" if "snapshot" in data else "")
    t = Table(title=f"lzfs report by {key}: {of} (stored: compressed bytes; "
                    f"unique: what deleting it gives back)", title_justify="left")
    cols = [key, "files", "logical", "zero", "stored", "unique", "shared", "shared with",
            "compr.", "dedup", "complete"]
    if key == "snapshot":
        cols.insert(1, "created")
    for col in cols:
        t.add_column(col, justify="left" if col in (key, "shared with", "created") else "right")
    for g in data["groups"]:
        complete = {True: "yes", False: "NO", None: ""}[g.get("complete")]
        created = [when(g.get("created"))] if key == "snapshot" else []
        t.add_row(escape(g["name"]), *created, str(g["files"]), human(g["logical"]),
                  human(g["zero"]), human(g["stored"]), human(g["unique"]), human(g["shared"]),
                  _shared_with(g["shared_with"]), f"{g['compression_ratio']:.2f}x",
                  f"{g['dedup_ratio']:.2f}x", complete)
    console.print(t)
    for g in data["groups"]:
        for problem in g.get("problems", []):
            console.print(f"[red]incomplete:[/red] {escape(g['name'])}: {escape(problem)}")
    tot = data.get("totals")
    if tot:
        s = Table(title="the store", title_justify="left", show_header=False, box=None)
        s.add_column(no_wrap=True)
        s.add_column(justify="right", no_wrap=True)
        s.add_column(no_wrap=True)
        for label, value, note in (
                ("logical", tot["logical"], ""),
                ("after zero pages", tot["referenced"], ""),
                ("after dedup", tot["unique_raw"], f"{tot['dedup_ratio']:.2f}x"),
                ("after compression", tot["stored"], f"{tot['compression_ratio']:.2f}x, "
                                                     f"{tot['overall_ratio']:.2f}x overall"),
                ("packs occupy", tot["pack_bytes"], "")):
            s.add_row(label, human(value), note)
        console.print(s)
        rows = sum(g["stored"] for g in data["groups"])
        if rows > tot["stored"] * 1.01:  # users compare `du MNT` with the disk (containers)
            console.print(
                f"note: a shared block counts in each row's stored, as `du MNT` counts it "
                f"once per file: rows add up to {human(rows)}, the store holds "
                f"{human(tot['stored'])}")
    matrix = data.get("matrix") or {}
    names = [n for n in matrix if matrix[n]]
    if 1 < len(names) <= MATRIX_MAX:
        m = Table(title="shared stored bytes between snapshots", title_justify="left")
        m.add_column("")
        for n in names:
            m.add_column(n, justify="right")
        for a in names:
            m.add_row(a, *("-" if a == b else human(matrix[a].get(b, 0)) for b in names))
        console.print(m)


def stats_text(st: dict[str, Any]) -> str:
    """`lzfs stats` and `.lzfs/stats`: StoreStats fields as a dict (asdict), plus a mount's
    ``pace``, ``cache``, ``requests`` and ``remote`` figures when present."""
    ratio = st["logical"] / st["stored"] if st["stored"] else float("inf") if st["logical"] else 1.0
    rows = [
        ("files", f"{st['files']}"), ("directories", f"{st['directories']}"),
        ("logical size", human(st["logical"])), ("zero pages / holes", human(st["zero"])),
        ("referenced data", human(st["referenced"])),
        ("after dedup", human(st["unique"])), ("after compression", human(st["stored"])),
        ("overall ratio", f"{ratio:.2f}x"),
        ("pages / frames", f"{st['pages']} / {st['frames']}"),
        ("unreferenced frames", f"{st['garbage_frames']} (lzfs gc removes them)"),
        ("pack files on disk", human(st["pack_bytes"])),
    ]
    if "passthrough" in st:
        rows.append(("passthrough", st["passthrough"] + (
            " (dumps go to staging files at the disk's speed)" if st["passthrough"] == "on"
            else " (dumps go through the daemon)")))
    if "decoder" in st:
        rows.append(("frame decoder", st["decoder"] + (
            " (checks and decompresses without the GIL)" if st["decoder"] == "native"
            else " (lzfs/store/_codec.c not in use: reads cost more CPU)")))
    if st.get("staged"):
        rows.append(("staged", f"{human(st['staged'])} written raw by a dump, compressed and "
                               f"deduplicated when the daemon is idle"))
    if st.get("pace"):
        p = st["pace"]
        rates = (f" (the disk takes {rate(p['disk_MBps'] * 1e6)}, the encoder "
                 f"{rate(p['encode_MBps'] * 1e6)})"
                 if p["disk_MBps"] is not None and p["encode_MBps"] is not None else "")
        rows.append(("staging", ("pays" if p["staging_pays"] else "does not pay") + rates))
    if "cache" in st:
        c = st["cache"]
        rows.append(("frame cache", f"{human(c['bytes'])} of {human(c['budget'])}, {c['hits']} "
                                    f"hits, {c['misses']} misses, {c['prefetched']} prefetched"))
    if st.get("requests"):
        sizes = (k.partition("<=") for k in st["requests"])
        rows.append(("requests", ", ".join(f"{op} <={human(int(size))}: {n}" for (op, _, size), n
                                           in zip(sizes, st["requests"].values(), strict=True))))
    if "remote" in st:
        r = st["remote"]
        rows.append(("object store", f"{r['url']} as {r['node']}: {r['gets']} GETs "
                                     f"({human(r['get_bytes'])}), {r['puts']} PUTs "
                                     f"({human(r['put_bytes'])}), {human(r['cached_bytes'])} "
                                     f"cached of {human(r['limit'])}"))
        if "manifest_gets" in r:
            rows.append(("published snapshots", f"{r['manifest_gets']} manifests fetched, "
                                                f"{r['snapshots_not_imported']} known by name "
                                                f"only (imported when first looked into)"))
        if r.get("unpublished"):
            rows.append(("awaiting publication", ", ".join(
                f"{n} ({why})" for n, why in r["unpublished"].items())))
    width = max(len(k) for k, _ in rows)
    return "".join(f"{k:<{width}}  {v}\n" for k, v in rows)


def byte_bars(quiet: bool = False) -> Progress:
    """Progress bars counting bytes, on stderr, shown only on a terminal."""
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), transient=True,
                    console=Console(stderr=True), disable=quiet or not sys.stderr.isatty())


@contextmanager
def byte_progress(what: str, quiet: bool = False) -> Iterator[Callable[[int, int], None]]:
    """One bar, fed (done, total) byte counts."""
    with byte_bars(quiet) as progress:
        task = progress.add_task(what, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


def print_fsck(result, console: Console | None = None) -> None:
    """The fsck summary: what was checked, each problem, damaged files, repairs, verdict."""
    console = console or console_for_stdout()
    console.print(f"checked {result.frames} frames ({human(result.frame_bytes)}), "
                  f"{result.pages} pages, {result.files} files, "
                  f"{result.directories} directories")
    for p in result.problems:
        tag = "[red]error:[/red]" if p.error else "[yellow]notice:[/yellow]"
        console.print(f"{tag} {escape(p.message)}")
    if result.damaged:
        console.print("damaged files (reads of these ranges fail with EIO):")
        for path, ranges in result.damaged.items():
            lost = sum(n for _, n in ranges)
            console.print(f"  {escape(path)}: {human(lost)} in {len(ranges)} ranges, first at "
                          f"offset {ranges[0][0]}")
    for r in result.repaired:
        console.print(f"[green]repaired:[/green] {escape(r)}")
    errors = len(result.errors)
    if not errors:
        console.print("store is clean")
    elif result.repair and not result.remaining:
        console.print(f"{errors} errors found, all repaired")
    elif result.repair:
        console.print(f"[red]{len(result.remaining)} errors left after repair:[/red]")
        for p in result.remaining:
            console.print(f"  {escape(p.message)}")
    else:
        console.print(f"[red]{errors} errors[/red]; 'lzfs fsck --repair' mends what can be "
                      f"mended without losing intact data")
