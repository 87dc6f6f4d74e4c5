"""Byte channels of 2.6.20 with their real capacities: AF_UNIX stream sockets and pipes.

Both are used with whole small messages (hackbench's 100 bytes, lat_ctx's token);
read() and write() are generators that block (yield) until they can proceed.

AF_UNIX SOCK_STREAM (net/unix/af_unix.c): each write() allocates one skb charged with
its truesize to the *sending* socket's sk_wmem_alloc and queues it on the peer's
receive queue; sock_alloc_send_skb() sleeps while sk_wmem_alloc >= sk_sndbuf,
so one skb may overshoot the limit. sk_sndbuf is sysctl_wmem_default = SK_WMEM_MAX =
(sizeof(struct sk_buff) + 256) * 256 (net/core/sock.c, unchanged from 2.5 to 2.6.21),
not the 131071 of later kernels. With a ~172-byte i386 struct sk_buff that is 109,568
bytes; truesize is SKB_DATA_ALIGN(100) = 128 plus the same 172, so 300 bytes, and a
socket holds at most 366 messages. A read() of 100 bytes consumes one skb; freeing
it (sock_wfree) wakes the blocked writers once (sk_wmem_alloc << 2) <= sk_sndbuf
(unix_writable). Every write wakes the reader (sock_def_readable).

Pipes (fs/pipe.c): 16 page buffers. A small write is merged into the last buffer
while it fits in the page, else it takes a new page (so 40 messages of 100 bytes per
page, 640 per pipe); a writer sleeps when all 16 buffers are in use and the last
cannot take the write. A read that empties a buffer frees its page and wakes the
waiters; every write wakes them. Readers and writers share one wait queue
(pipe->wait), so a wakeup wakes both kinds, and each rechecks and may sleep again.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from pipeline.generate import layout as L
from pipeline.generate.simulated_kernel import NR_READ, NR_WRITE, Kernel, Task

SK_BUFF_SIZE = 172          # sizeof(struct sk_buff), i386 (estimate)
SK_SNDBUF = (SK_BUFF_SIZE + 256) * 256      # SK_WMEM_MAX = sysctl_wmem_default in 2.6.20
SKB_TRUESIZE = 128 + SK_BUFF_SIZE           # SKB_DATA_ALIGN(100) + sizeof(struct sk_buff)
SKB_HEADS_PER_PAGE = 21     # skbuff_head_cache: ~172 bytes, cache-line aligned to 192
SKB_DATA_PER_PAGE = 8       # 128 + skb_shared_info (~236) -> kmalloc size-512
PIPE_BUFFERS = 16           # PIPE_BUFFERS in 2.6.20
PIPE_PAGE = L.PAGE


class Buffers:
    """The kernel's shared message-buffer caches: skb slabs and the page allocator."""

    def __init__(self, heap: L.KernelHeap) -> None:
        self.skb_heads = L.Slab(heap, SKB_HEADS_PER_PAGE)
        self.skb_data = L.Slab(heap, SKB_DATA_PER_PAGE)
        self.pages = L.PagePool(heap)


@dataclass(eq=False)
class ChannelStats:
    """What a channel carried, for checks: bytes and messages in, out, and at most queued."""

    writes: int = 0
    reads: int = 0
    max_queued: int = 0          # messages (skbs) or buffers' bytes / message size
    max_bytes: int = 0           # socket: sk_wmem_alloc; pipe: bytes buffered


@dataclass(eq=False)
class UnixStream:
    """One socketpair(AF_UNIX, SOCK_STREAM): writers on the `tx` end, one reader on `rx`."""

    k: Kernel
    bufs: Buffers
    tx_page: int = 0
    rx_page: int = 0
    queue: deque[tuple[int, int]] = field(default_factory=deque)   # (skb head, skb data)
    wmem: int = 0
    writers: list[Task] = field(default_factory=list)              # tx sk_sleep
    readers: list[Task] = field(default_factory=list)              # rx sk_sleep
    stats: ChannelStats = field(default_factory=ChannelStats)

    def __post_init__(self) -> None:
        self.tx_page, self.rx_page = self.k.heap.pages(), self.k.heap.pages()

    def write(self, nbytes: int) -> Iterator[None]:
        k, bufs = self.k, self.bufs
        k.syscall(NR_WRITE)
        while self.wmem >= SK_SNDBUF:
            k.block(self.writers)
            yield
        head, data = bufs.skb_heads.alloc(), bufs.skb_data.alloc()
        k.touch(L.PATH_UNIX)
        k.touch(((self.tx_page, 1), (self.rx_page, 1),
                 (bufs.skb_heads.page(head), 1), (bufs.skb_data.page(data), 1)))
        k.spend(k.c.unix_send)
        self.queue.append((head, data))
        self.wmem += SKB_TRUESIZE
        s = self.stats
        s.writes += 1
        s.max_queued = max(s.max_queued, len(self.queue))
        s.max_bytes = max(s.max_bytes, self.wmem)
        k.wake_all(self.readers)

    def read(self, nbytes: int) -> Iterator[None]:
        k, bufs = self.k, self.bufs
        k.syscall(NR_READ)
        while not self.queue:
            k.block(self.readers)
            yield
        head, data = self.queue.popleft()
        k.touch(L.PATH_UNIX)
        k.touch(((self.rx_page, 1), (bufs.skb_heads.page(head), 0),
                 (bufs.skb_data.page(data), 0), (self.tx_page, 1)))
        k.spend(k.c.unix_recv)
        bufs.skb_heads.free(head)
        bufs.skb_data.free(data)
        self.wmem -= SKB_TRUESIZE
        self.stats.reads += 1
        if self.writers and self.wmem << 2 <= SK_SNDBUF:
            k.wake_all(self.writers)


@dataclass(eq=False)
class Pipe:
    """One pipe: 16 page buffers, small writes merged, one shared wait queue."""

    k: Kernel
    bufs: Buffers
    page: int = 0                                                  # pipe_inode_info + inode
    buffers: deque[list[int]] = field(default_factory=deque)      # [page, bytes] per buffer
    wait: list[Task] = field(default_factory=list)                 # pipe->wait
    stats: ChannelStats = field(default_factory=ChannelStats)
    _bytes: int = 0

    def __post_init__(self) -> None:
        self.page = self.k.heap.pages()

    def _merges(self, nbytes: int) -> bool:
        return bool(self.buffers) and self.buffers[-1][1] + nbytes <= PIPE_PAGE

    def write(self, nbytes: int) -> Iterator[None]:
        k = self.k
        k.syscall(NR_WRITE)
        while not self._merges(nbytes) and len(self.buffers) >= PIPE_BUFFERS:
            k.block(self.wait)
            yield
        if self._merges(nbytes):
            buf = self.buffers[-1]
            buf[1] += nbytes
        else:
            buf = [self.bufs.pages.alloc(), nbytes]
            self.buffers.append(buf)
        k.touch(L.PATH_PIPE)
        k.touch(((self.page, 1), (buf[0], 1)))
        k.spend(k.c.pipe_write)
        self._bytes += nbytes
        s = self.stats
        s.writes += 1
        s.max_bytes = max(s.max_bytes, self._bytes)
        s.max_queued = max(s.max_queued, self._bytes // nbytes)
        k.wake_all(self.wait)

    def read(self, nbytes: int) -> Iterator[None]:
        k = self.k
        k.syscall(NR_READ)
        while not self.buffers:
            k.block(self.wait)
            yield
        buf = self.buffers[0]
        k.touch(L.PATH_PIPE)
        k.touch(((self.page, 1), (buf[0], 0)))
        k.spend(k.c.pipe_read)
        buf[1] -= nbytes
        self._bytes -= nbytes
        self.stats.reads += 1
        if buf[1] <= 0:
            self.buffers.popleft()
            self.bufs.pages.free(buf[0])
            k.wake_all(self.wait)


Channel = UnixStream | Pipe
