"""Sizes as people write them: ``human`` for output (binary units: MiB, GiB) and
``parse_size`` for options ("300M", "10G"). Every floor prints sizes, so they live at the
ground, importing nothing."""

from __future__ import annotations


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 file', '2 files' (``many``: the plural when it is not ``word`` + 's')."""
    return f"{n} {word if n == 1 else many or word + 's'}"


def rate(bytes_per_s: float) -> str:
    """A rate in the units sizes are given in (MiB/s, not MB/s beside MiB)."""
    return human(bytes_per_s) + "/s"


def parse_size(text: str) -> int:
    """'300M', '10G', '4096' -> bytes (the inverse of human, for options)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().rstrip("B").rstrip("I")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)
