"""Text from traces and config files on its way to a terminal.

A trace's workload name, a path or a value quoted in an error is data: printed raw, an
ANSI escape in it recolours or rewrites the terminal, a NUL or a newline cuts the line,
and rich reads `[...]` in it as markup (a stray closing tag raises). `printable` is for
any output (terminal or HTML); `markup_safe` for strings that rich parses as markup.
"""
from __future__ import annotations

from typing import Any

from rich.markup import escape


def printable(text: str) -> str:
    """`text` with every character Python calls non-printable (control characters such as
    ESC and NUL, line and format separators) shown as its escape, e.g. `\\x1b`, `\\x00`."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def markup_safe(text: str) -> str:
    """`printable(text)` with rich markup escaped: prints as itself inside a markup string."""
    return escape(printable(text))


def say(console: Any, text: str, tag: str = "") -> None:
    """Print one line: `text` is data (paths, names, trace lines), escaped and never read as
    markup; `tag` is the line's own markup (`[red]error:[/red]`), put before it."""
    console.print(f"{tag} {markup_safe(text)}" if tag else markup_safe(text), highlight=False, soft_wrap=True)


def count_of(n: int, noun: str) -> str:
    """`n` and `noun` in English, e.g. "80000 messages", "1 run", "3 context switches": a
    trace's op unit is stored singular ("message", "timer tick")."""
    if n == 1 or not noun:
        return f"{n} {noun}".rstrip()
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return f"{n} {noun}es"
    if noun.endswith("y") and noun[-2:-1] not in tuple("aeiou"):
        return f"{n} {noun[:-1]}ies"
    return f"{n} {noun}s"
