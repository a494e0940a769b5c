"""Tables for people: human units, readable widths (rich). JSON is in report.py."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _shared_with(d: dict[str, float], limit: int = 3) -> str:
    top = sorted(d.items(), key=lambda kv: -kv[1])[:limit]
    more = len(d) - len(top)
    return ", ".join(f"{escape(k)} {human(v)}" for k, v in top) + (f" +{more} more" if more > 0 else "")


def print_report(data: dict, console: Console | None = None) -> None:
    console = console or Console(width=160)
    if data["by"] == "region":
        for snap in data["snapshots"]:
            t = Table(title=f"memory regions of {snap['snapshot']}", title_justify="left")
            for col in ("region", "pages stored", "zero", "unique", "shared", "shared with"):
                t.add_column(col, justify="left" if col in ("region", "shared with") else "right")
            for r in snap["regions"]:
                t.add_row(escape(r["region"][-60:]), human(r["logical"]), human(r["zero"]),
                          human(r["unique_raw"]), human(r["shared_raw"]),
                          _shared_with(r["shared_with"]))
            console.print(t)
        for err in data.get("errors", []):
            console.print(f"[red]cannot parse:[/red] {err}")
        return
    key = "snapshot" if data["by"] == "snapshot" else "file"
    t = Table(title=f"lzfs report by {key}: {data['store']}", title_justify="left")
    for col in (key, "files", "logical", "zero", "stored", "unique", "shared", "shared with",
                "compr.", "dedup", "complete"):
        t.add_column(col, justify="left" if col in (key, "shared with") else "right")
    for g in data["groups"]:
        complete = {True: "yes", False: "NO", None: ""}[g.get("complete")]
        t.add_row(escape(g["name"]), str(g["files"]), human(g["logical"]), human(g["zero"]),
                  human(g["stored"]), human(g["unique"]), human(g["shared"]),
                  _shared_with(g["shared_with"]), f"{g['compression_ratio']:.2f}x",
                  f"{g['dedup_ratio']:.2f}x", complete)
    console.print(t)
    tot = data.get("totals")
    if tot:
        console.print(
            f"store: {human(tot['logical'])} logical -> {human(tot['referenced'])} after zero "
            f"pages -> {human(tot['unique_raw'])} after dedup ({tot['dedup_ratio']:.2f}x) -> "
            f"{human(tot['stored'])} after compression ({tot['compression_ratio']:.2f}x); "
            f"{tot['overall_ratio']:.2f}x overall; packs occupy {human(tot['pack_bytes'])}")
    matrix = data.get("matrix") or {}
    names = [n for n in matrix if matrix[n]]
    if len(names) > 1:
        m = Table(title="shared stored bytes between snapshots", title_justify="left")
        m.add_column("")
        for n in names:
            m.add_column(n, justify="right")
        for a in names:
            m.add_row(a, *("-" if a == b else human(matrix[a].get(b, 0)) for b in names))
        console.print(m)


def parse_size(text: str) -> int:
    """'300M', '10G', '4096' -> bytes (the inverse of human, for options)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().rstrip("B").rstrip("I")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)
