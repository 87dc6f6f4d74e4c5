"""The working-set estimate: the pages a task is assumed to touch in each scheduling quantum.

Recordings of a guest hold no page accesses, but the model prices TLB and shadow-table
misses by the pages touched after each switch. The importer therefore assumes a fixed
working set per quantum, and writes the assumption into the trace metadata (`source`
["working_set"]) so every result derived from an imported trace states it:

* after every switch-in of a **user task**: `user_pages` private pages of its process,
  then `kernel_pages` global kernel pages;
* after every switch-in of a **kernel thread**: the `kernel_pages` only (it runs in the
  borrowed address space of whatever process ran before).

Pages are those of `pipeline.generate.layout`, an i386 2.6.20-era guest: the user pages
start with a benchmark process's hot pages (`USER_HOT`: program text, glibc text and data,
.data, two stack pages), then its other mapped pages, then heap pages after .bss; the
kernel pages (vpn >= 0xC0000, global, shared by every address space) are the text and data
of the switch, syscall, wake-up and timer paths, then kernel heap pages.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pipeline.generate import layout as L

_USER = L.USER_HOT + ((L.TEXT2, 0), (L.BSS, 1), (L.LIBC_BSS, 0))
_KERNEL = tuple({vpn: (vpn, w) for vpn, w in reversed(
    L.PATH_SWITCH + L.PATH_SYSCALL + L.PATH_WAKE + L.PATH_TICK
    + ((L.K_MM, 0), (L.K_EXIT, 0), (L.K_PIPE, 0), (L.K_SOCK, 0), (L.K_UNIX, 0)))}.values())[::-1]
_HEAP_AFTER_BSS = L.BSS + 1


@dataclass(frozen=True)
class WorkingSet:
    """Pages assumed touched per scheduling quantum (see the module docstring)."""

    user_pages: int = 6      # private pages of the task's process, per user-task quantum
    kernel_pages: int = 12   # global kernel pages (vpn >= 0xC0000), per quantum of any task

    def __post_init__(self) -> None:
        if self.user_pages < 0 or self.kernel_pages < 0:
            raise ValueError("working-set page counts must be >= 0")

    def user(self) -> tuple[tuple[int, int], ...]:
        """(vpn, 1 if written) of the user pages, the same vpns in every process."""
        extra = tuple((_HEAP_AFTER_BSS + i, 1) for i in range(max(0, self.user_pages - len(_USER))))
        return (_USER + extra)[: self.user_pages]

    def kernel(self) -> tuple[tuple[int, int], ...]:
        """(vpn, 1 if written) of the kernel pages."""
        extra = tuple((L.HEAP_BASE + i, 1) for i in range(max(0, self.kernel_pages - len(_KERNEL))))
        return (_KERNEL + extra)[: self.kernel_pages]

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "per": "switch-in of a task (kernel threads: kernel pages only)",
                "layout": "pipeline.generate.layout (i386, 3G/1G split)"}
