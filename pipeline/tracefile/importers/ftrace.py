"""ftrace text (`/sys/kernel/tracing/trace`), Android atrace included.

Lines carry the latency-flags column (`[003] d... 26186.336632:`) and atrace adds a TGID
column (`(  12)`); payloads are the kernel's print formats (`events.KERNEL`).
"""
from __future__ import annotations

import re

from pipeline.tracefile.importers.formats import KERNEL, Format, Head

_FLAGS = re.compile(r"\]\s+[.a-zA-Z0-9]{4,5}\s+\d+\.\d+:\s|\(\s*(?:\d+|-+)\)\s+\[\d+\]")


def looks_ftrace(head: Head) -> bool:
    """A `# tracer:` header, or most event lines with a flags or TGID column."""
    if any(h.startswith("# tracer:") for h in head.headers):
        return True
    return bool(head.raw) and sum(bool(_FLAGS.search(r)) for r in head.raw) * 2 > len(head.raw)


FORMAT = Format("ftrace", looks_ftrace, KERNEL, "ftrace text (TGID column read where present)")
