"""Where the simulated i386 guest keeps things: virtual page numbers (vpn = address >> 12).

The replay prices pages, not bytes, so the layout only has to put each thing on a
plausible page of a plausible page table (table = vpn >> 10, 4 MiB each):

* User space (per process, private, non-global): a small dynamically linked
  2.6.20-era ELF binary. Program text at 0x08048000, data and bss right after it,
  glibc text/data just below the 0xb7f.. mmap top, the stack at the top of user
  space. A process therefore spans three guest page tables (0x020, 0x2df, 0x2ff).
* Kernel (vpn >= 0xC0000, global, shared by every address space): a fixed set of
  text pages per subsystem, the runqueue and jiffies pages, then a heap from which
  per-task pages (task_struct, kernel stack), per-socket/pipe pages and the slab
  and page-allocator pages of message buffers are carved.

Allocators hand back the most recently freed object first (LIFO), as the 2.6.20
per-CPU slab array caches and hot page lists do: a buffer freed by a reader and
reallocated by the next writer lands on the same, cache- and TLB-warm page.
"""
from __future__ import annotations

PAGE = 4096

# --- user space (one process) ---------------------------------------------------
TEXT = 0x08048           # program text (hot loop)
TEXT2 = 0x08049          # rest of the program text (mapped, cold)
DATA = 0x0804A           # .data: globals such as `loops` (written once: COW)
BSS = 0x0804B            # .bss (mapped, cold)
LIBC_TEXT = 0xB7E2F      # glibc text: the read()/write()/poll() wrappers
LIBC_DATA = 0xB7F53      # glibc data/GOT (read through every call)
LIBC_BSS = 0xB7F54       # glibc bss (mapped, cold)
STACK_LO = 0xBFFFE       # stack: caller frames (out_fds[] of hackbench's group())
STACK_HI = 0xBFFFF       # stack: the current frame (the 100-byte message buffer)

# Pages a benchmark process accesses in every scheduling quantum: (vpn, 1 if written).
USER_HOT: tuple[tuple[int, int], ...] = (
    (TEXT, 0), (LIBC_TEXT, 0), (LIBC_DATA, 0), (DATA, 1), (STACK_LO, 1), (STACK_HI, 1),
)
# Private pages written after fork: copy-on-write on the first write.
USER_COW: frozenset[int] = frozenset({DATA, STACK_LO, STACK_HI})
# Every user page with a present PTE; exit clears each one.
USER_MAPPED: tuple[int, ...] = (TEXT, TEXT2, DATA, BSS, LIBC_TEXT, LIBC_DATA, LIBC_BSS,
                                STACK_LO, STACK_HI)

# --- kernel text (global) ---------------------------------------------------------
K_ENTRY = 0xC0102        # entry.S: sysenter/int 0x80 and interrupt entry/exit
K_SCHED = 0xC0114        # schedule(), context_switch(), switch_to
K_WAKE = 0xC0115         # try_to_wake_up(), __wake_up_common()
K_EXIT = 0xC011C         # do_exit(), wait4()/release_task()
K_TIMER = 0xC0126        # do_timer(), scheduler_tick()
K_TIME = 0xC010B         # i8259A, PIT clocksource (pit_read)
K_MM = 0xC0148           # do_page_fault(), do_wp_page(), zap_pte_range()
K_VFS = 0xC0168          # sys_read/sys_write, vfs_read/vfs_write, fget/fput
K_PIPE = 0xC016E         # fs/pipe.c
K_SOCK = 0xC0241         # net/socket.c, net/core/sock.c and skbuff.c
K_UNIX = 0xC0262         # net/unix/af_unix.c

# --- kernel data (global) -----------------------------------------------------------
K_RUNQUEUE = 0xC0500     # the (single) CPU's runqueue
K_JIFFIES = 0xC0501      # jiffies, xtime, the clocksource state
HEAP_BASE = 0xC1000      # per-task, per-channel and buffer pages from here up

# Code paths: the kernel pages each one reads (vpn, 0) or writes (vpn, 1).
PATH_SWITCH = ((K_SCHED, 0), (K_RUNQUEUE, 1))
PATH_WAKE = ((K_WAKE, 0), (K_RUNQUEUE, 1))
PATH_SYSCALL = ((K_ENTRY, 0), (K_VFS, 0))
PATH_PIPE = ((K_PIPE, 0),)
PATH_UNIX = ((K_SOCK, 0), (K_UNIX, 0))
PATH_FAULT = ((K_ENTRY, 0), (K_MM, 0))
PATH_EXIT = ((K_EXIT, 0), (K_MM, 0))
PATH_TICK = ((K_ENTRY, 0), (K_TIME, 0), (K_TIMER, 0), (K_JIFFIES, 1), (K_RUNQUEUE, 1))


class KernelHeap:
    """Bump allocator for kernel pages that live as long as the run (task, socket)."""

    def __init__(self, base: int = HEAP_BASE) -> None:
        self._next = base

    def pages(self, n: int = 1) -> int:
        """First of `n` fresh consecutive kernel pages."""
        first = self._next
        self._next += n
        return first


class Slab:
    """A slab cache of fixed-size objects; LIFO reuse like the per-CPU array cache."""

    def __init__(self, heap: KernelHeap, per_page: int) -> None:
        self._heap = heap
        self._per_page = per_page      # objects per 4 KiB slab page
        self._free: list[int] = []
        self._pages: list[int] = []
        self._count = 0

    def alloc(self) -> int:
        """An object id: the most recently freed one, else a new one (new page if needed)."""
        if self._free:
            return self._free.pop()
        obj = self._count
        self._count += 1
        if obj % self._per_page == 0:
            self._pages.append(self._heap.pages())
        return obj

    def free(self, obj: int) -> None:
        self._free.append(obj)

    def page(self, obj: int) -> int:
        return self._pages[obj // self._per_page]


class PagePool:
    """Whole pages from the page allocator (pipe buffers); hot (LIFO) reuse."""

    def __init__(self, heap: KernelHeap) -> None:
        self._heap = heap
        self._free: list[int] = []

    def alloc(self) -> int:
        return self._free.pop() if self._free else self._heap.pages()

    def free(self, vpn: int) -> None:
        self._free.append(vpn)
