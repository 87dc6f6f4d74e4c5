"""Tables cut to the width they are shown in.

rich fits a table that is wider than the console by narrowing its columns, and a column
narrower than a word cuts it to `…`: a number or a mode name lost. Instead a wide table
is split here into blocks of its columns, each block repeating the key columns (the
workload, the mode), every block narrow enough that no cell needs cutting.
"""
from __future__ import annotations

import os
from dataclasses import replace

from rich.console import Console
from rich.measure import Measurement
from rich.table import Column, Table

KEY_WRAP = 30   # a key column (a workload name and its unit) may wrap to this width, never below its longest word


def table_width(console: Console) -> int | None:
    """The width tables must fit: $COLUMNS if set (as rich reads it), else the terminal's;
    None when the output is piped without COLUMNS: every table is printed complete."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    return console.size.width if console.is_terminal else None


def blocks(table: Table, width: int | None, console: Console, keys: int = 1) -> list[Table]:
    """`table` as blocks of its columns no wider than `width` (one block if it fits or
    `width` is None), the first `keys` columns in every block, as wide in each. The
    title goes on the first block, the caption on the last. Key columns wrap at spaces; the
    others never wrap, and a column too wide for any block is folded, not cut. Print each
    block at `width`."""
    key_widths = [_width(console, c, KEY_WRAP) for c in table.columns[:keys]]
    key_cols = [replace(c, overflow="fold") for c in table.columns[:keys]]
    value_cols = [replace(c, overflow="fold", no_wrap=True) for c in table.columns[keys:]]
    need = [_width(console, c) for c in value_cols]
    used = 1 + sum(w + 3 for w in key_widths)
    if width is None or used + sum(n + 3 for n in need) <= width:
        return [_block(table, key_cols, value_cols, first=True, last=True)]
    key_cols = [replace(c, max_width=w) for c, w in zip(key_cols, key_widths)]
    groups: list[list[Column]] = [[]]
    room = width - used
    for column, n in zip(value_cols, need):
        if groups[-1] and n + 3 > room:
            groups.append([])
            room = width - used
        groups[-1].append(column)
        room -= n + 3
    return [_block(table, key_cols, g, first=i == 0, last=i == len(groups) - 1) for i, g in enumerate(groups)]


def _width(console: Console, column: Column, wrap: int | None = None) -> int:
    """The column's content width: its widest cell (header included), or, with `wrap`, at most
    `wrap` but never less than its longest word."""
    options = console.options.update_width(10_000)
    sizes = [Measurement.get(console, options, cell) for cell in [column.header, *column.cells]]
    widest = max(max(s.maximum for s in sizes), column.min_width or 0)
    return widest if wrap is None else max(min(widest, wrap), max(s.minimum for s in sizes))


def _block(table: Table, keys: list[Column], values: list[Column], first: bool, last: bool) -> Table:
    """A table of the `keys` and `values` columns; a row with no value in `values` (a trace's
    measured row where none of these modes was measured) is left out."""
    block = Table(title=table.title if first else None, caption=table.caption if last else None,
                  box=table.box, show_header=table.show_header, show_lines=table.show_lines)
    kept = [i for i in range(len(table.rows)) if not values or any(list(c.cells)[i] != "" for c in values)]
    block.columns = [replace(c, _index=n, _cells=[list(c.cells)[i] for i in kept]) for n, c in enumerate(keys + values)]
    block.rows = [table.rows[i] for i in kept]
    return block
