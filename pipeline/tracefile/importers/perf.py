"""`perf script` output: `comm PID[/TID] [CPU] sec.usec: [period] subsys:event: payload`.

The pid is separated by blanks, not by a dash; tracepoints carry their subsystem
(`sched:sched_switch`); the CPU column is absent unless recorded with -a/-C or printed with
-F cpu; `-F tgid` (or `pid/tid`) gives the process id. Payloads are the kernel's print
formats; callchain frames (tab-indented) and `#` header lines are not events.
"""
from __future__ import annotations

import re

from pipeline.tracefile.importers.formats import KERNEL, Format, Head

_DASH_PID = re.compile(r"-\d+\s+[\[(]")


def looks_perf(head: Head) -> bool:
    """A `# perf version`/`# cmdline` header, `subsys:event` names, or no `-PID` prefixes."""
    if any(h.startswith(("# perf version", "# cmdline", "# captured on")) for h in head.headers):
        return True
    if any(":" in e.event for e in head.events):
        return True
    return bool(head.raw) and not any(_DASH_PID.search(r) for r in head.raw)


FORMAT = Format("perf", looks_perf, KERNEL, "perf script")
