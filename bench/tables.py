"""Plain-text tables: a header row, a rule, and columns padded to their widest cell."""

from __future__ import annotations

from collections.abc import Sequence


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The rows under the headers; the first column is left-aligned, the others right-aligned."""
    widths = [max(len(str(row[column])) for row in [headers, *rows]) for column in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.ljust(width) if column == 0 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def heading(title: str) -> str:
    return f"\n{title}\n{'=' * len(title)}"


def verdict(met: bool) -> str:
    return "yes" if met else "NO"
