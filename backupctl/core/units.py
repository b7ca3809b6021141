"""Human-readable quantities shared by the CLI and the log lines of actions."""

from __future__ import annotations


def human_bytes(count: int | float) -> str:
    """`1536` → `"1.5 KiB"`: binary units, one decimal (none for plain bytes)."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
