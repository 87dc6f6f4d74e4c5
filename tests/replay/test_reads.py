"""replay/reads.py: a chunk replayed from a warmed-up start state that differs from the
sequential one is accepted only when it counts exactly what the sequential replay counts
from there, and the end state it gives back is the sequential one."""
from __future__ import annotations

import dataclasses

from hypothesis import event, given
from hypothesis import strategies as st

from replay import kernel, reads
from tests.replay.conftest import GUEST, K, make_events
from tests.replay.strategies import GUESTS, span_of
from tests.replay.test_kernel import PAGES, SETTINGS, columns, rows_of, traces, varied


# Paging events only, over the pages of test_kernel's traces.
_touch = st.tuples(st.just("touch"), st.sampled_from(PAGES), st.integers(0, 1))
paging_rows = st.lists(st.one_of(st.tuples(st.just("cr3"), st.integers(1, 6)), _touch, _touch, _touch,
                                 st.tuples(st.sampled_from(["pf", "pte", "invlpg"]), st.sampled_from(PAGES))),
                       min_size=20, max_size=80)


def _sequential(mode, guest, events, start: int, stop: int):
    """The state at `start` and the counts, attribution and state of [start, stop), replayed from event 0."""
    state = kernel.new_state([mode], guest)
    kernel.replay_batch(state, *columns(events, 0, start))
    before = kernel.snapshot(state)
    kernel.reset_counts(state)
    kernel.replay_batch(state, *columns(events, start, stop))
    return before, kernel.counts(state, events.span_ns), rows_of(kernel.attribution(state, 0, 7)), kernel.snapshot(state)


def _speculative(mode, guest, events, warm: int, start: int, stop: int):
    """The same chunk after the warm-up [warm, start) only, tracking what it reads."""
    state = kernel.new_state([mode], guest)
    kernel.replay_batch(state, *columns(events, warm, start))
    before = kernel.snapshot(state)
    kernel.reset_counts(state)
    kernel.track_reads(state)
    kernel.replay_batch(state, *columns(events, start, stop))
    return (before, kernel.counts(state, events.span_ns), rows_of(kernel.attribution(state, 0, 7)),
            kernel.snapshot(state), reads.reads(state))


def _check(mode, guest, events, warm: int, start: int, stop: int) -> None:
    """Whenever the proof accepts the warmed-up start of [start, stop), the chunk's counts,
    per source too, are the sequential ones, and the end state carried back is the
    sequential end state. (With --hypothesis-show-statistics: how often it accepted start
    states that differ, the case the proof is for.)"""
    exact, counts, by_source, end = _sequential(mode, guest, events, start, stop)
    mine, my_counts, my_by_source, my_end, read = _speculative(mode, guest, events, warm, start, stop)
    accepted = reads.follows(mine, exact, read, (mode,))
    event(f"{'accepted' if accepted else 'refused'}, start states {'equal' if mine == exact else 'differ'}")
    if accepted:
        assert my_counts == counts and my_by_source == by_source
        assert reads.carried(mine, exact, my_end, read) == end


@SETTINGS
@given(data=st.data(), rows=traces)
def test_any_mode_any_cut(modes, data, rows):
    mode = data.draw(st.one_of(st.sampled_from(list(modes.values())), varied(modes)))
    events = make_events(rows, span_ns=span_of(rows), start_asid=data.draw(st.integers(0, 5)))
    stop = data.draw(st.integers(0, len(rows)))
    start = data.draw(st.integers(0, stop))
    _check(mode, data.draw(GUESTS), events, data.draw(st.integers(0, start)), start, stop)


@SETTINGS
@given(data=st.data(), rows=paging_rows)
def test_shadow_pools_that_differ(modes, data, rows):
    # Shadow paging with TLBs that agree after any warm-up and no vCPU state, chunks that
    # start after a warm-up shorter than the prefix: the pools differ, in pools that never
    # fill and in pools that evict, and only the pool is left to prove.
    shadow = [m for m in modes.values() if m.features.shadow]
    mode = dataclasses.replace(data.draw(st.sampled_from(shadow)), tlb_entries=1,
                               shadow_pool_pages=data.draw(st.sampled_from([2, 3, 5, 2048])))
    events = make_events(rows, start_asid=data.draw(st.integers(0, 5)))
    start = data.draw(st.integers(1, len(rows) - 1))
    _check(mode, GUEST, events, data.draw(st.integers(1, start)), start, data.draw(st.integers(start, len(rows))))


@SETTINGS
@given(data=st.data(), rows=paging_rows)
def test_tlbs_that_differ(modes, data, rows):
    # Any mode but QEMU's (no hardware TLB) with a small TLB, chunks after a warm-up shorter
    # than the prefix: the TLBs differ in old entries, global ones a mov cr3 keeps or user
    # ones, that the chunk may look up, drop with invlpg or push out; without VPID an exit
    # empties the mode's own TLB.
    paging = [m for m in modes.values() if not m.features.softmmu]
    mode = dataclasses.replace(data.draw(st.sampled_from(paging)), tlb_entries=data.draw(st.sampled_from([2, 3, 5, 256])),
                               shadow_pool_pages=2048)
    events = make_events(rows, start_asid=data.draw(st.integers(0, 5)))
    start = data.draw(st.integers(1, len(rows) - 1))
    _check(mode, GUEST, events, data.draw(st.integers(1, start)), start, data.draw(st.integers(start, len(rows))))


def _trunk(modes):
    """kvm-trunk with a one-entry TLB, so that the TLBs agree after any warm-up and only the
    shadow pool can differ."""
    return dataclasses.replace(modes["kvm-trunk"], tlb_entries=1)


def test_a_page_the_chunk_never_reads_may_differ(modes):
    # kvm-trunk keeps every shadow page: the sequential pool has asid 2's table (and a
    # filled kernel PTE) from before the warm-up, the warmed-up one does not. The chunk
    # touches only asid 1's page and the kernel page the warm-up also filled: accepted,
    # and asid 2's table and the kernel PTE come back in the end state, oldest first.
    trunk = _trunk(modes)
    rows = [("cr3", 2), ("touch", 0x40000, 0), ("touch", K + 1, 0),   # before the warm-up
            ("cr3", 1), ("touch", K, 0),                              # the warm-up
            ("touch", 0x08048, 1), ("touch", K, 0)]                   # the chunk
    events = make_events(rows)
    exact, counts, _, end = _sequential(trunk, GUEST, events, 5, 7)
    mine, my_counts, _, my_end, read = _speculative(trunk, GUEST, events, 3, 5, 7)
    assert mine != exact
    assert reads.follows(mine, exact, read, (trunk,))
    assert my_counts == counts and reads.carried(mine, exact, my_end, read) == end
    assert [(space, index) for space, index, _ in end[0]["pool"]] == [
        (2, None), (2, 0x40000 >> 10), (1, None), (1, 0x08048 >> 10), (None, K >> 10)]
    assert end[0]["pool"][-1][2] == (K, K + 1)


def _refused(mode, rows: list[tuple], warm: int, start: int) -> None:
    """The chunk [start, end of rows) after the warm-up [warm, start) miscounts, and the
    proof refuses its start state."""
    events = make_events(rows)
    exact, counts, _, _ = _sequential(mode, GUEST, events, start, len(rows))
    mine, my_counts, _, _, read = _speculative(mode, GUEST, events, warm, start, len(rows))
    assert my_counts != counts
    assert not reads.follows(mine, exact, read, (mode,))


def test_a_chunk_that_reads_the_difference_is_refused(modes):
    # The chunk touches asid 2's page again: the warmed-up pool lacks its table, so it
    # would count a page allocation and a fault the sequential replay does not.
    rows = [("cr3", 2), ("touch", 0x40000, 0), ("cr3", 1), ("touch", K, 0), ("cr3", 2), ("touch", 0x40000, 0)]
    _refused(_trunk(modes), rows, 2, 4)


def test_a_kernel_pte_filled_before_the_warm_up_is_refused(modes):
    # Same table, another PTE: the warm-up filled K's, the sequential replay also K + 1's,
    # which the chunk touches: it would count a shadow fault the sequential one does not.
    rows = [("cr3", 1), ("touch", K + 1, 0), ("touch", 0x08048, 0), ("touch", K, 0), ("touch", K + 1, 0)]
    _refused(_trunk(modes), rows, 3, 4)


def test_a_cr3_cache_hit_the_sequential_cache_would_miss_is_refused(modes):
    # The 4-entry cache, round robin: before the warm-up it holds spaces 1-4 (next slot 0).
    # Warm-up 5, 2, 3, 6: sequentially 5 and 6 overwrite 1 and 2 (2 and 3 hit); from empty,
    # all four miss and fill [5, 2, 3, 6]. The chunk's switch to 2 then hits, where the
    # sequential cache misses (an exit and a refill): the chunk asked for a space the two
    # caches disagree on, though it refilled nothing.
    paravirt = dataclasses.replace(modes["kvm-paravirt"], tlb_entries=1)
    rows = [("cr3", 1), ("cr3", 2), ("cr3", 3), ("cr3", 4), ("cr3", 5), ("cr3", 2), ("cr3", 3), ("cr3", 6), ("cr3", 2)]
    mine = _speculative(paravirt, GUEST, make_events(rows), 4, 8, 9)
    assert mine[0][0]["cr3_cache"] != _sequential(paravirt, GUEST, make_events(rows), 8, 9)[0][0]["cr3_cache"]
    assert not mine[4][0].cr3_filled
    _refused(paravirt, rows, 4, 8)


def _native(modes, entries: int):
    return dataclasses.replace(modes["native"], tlb_entries=entries)


def test_old_global_entries_the_chunk_never_looks_up_may_differ(modes):
    # A 4-entry TLB. Before the warm-up: kernel pages K+1, K+2 (global: a mov cr3 keeps
    # them). The warm-up switches space and touches K. The chunk touches user page u and
    # K, and a third new page that fills the TLB: sequentially the 4th distinct entry
    # pushes out K+1, the oldest, and keeps K+2, which the chunk's own TLB never had.
    native = _native(modes, 4)
    u = 0x08048
    rows = [("touch", K + 1, 0), ("touch", K + 2, 0),                   # before the warm-up
            ("cr3", 1), ("touch", K, 0),                                # the warm-up
            ("touch", u, 0), ("touch", K, 0), ("touch", u + 1, 0)]      # the chunk
    events = make_events(rows)
    exact, counts, _, end = _sequential(native, GUEST, events, 4, 7)
    mine, my_counts, _, my_end, read = _speculative(native, GUEST, events, 2, 4, 7)
    assert exact[0]["tlb_native"] == [K + 1, K + 2, K] and mine[0]["tlb_native"] == [K]
    assert reads.follows(mine, exact, read, (native,))
    assert my_counts == counts and reads.carried(mine, exact, my_end, read) == end
    assert end[0]["tlb_native"] == [K + 2, u, K, u + 1]


def test_a_chunk_that_looks_up_an_old_entry_is_refused(modes):
    # The chunk touches K+1, which the sequential TLB still holds: a hit, where the warmed-up
    # TLB misses.
    rows = [("touch", K + 1, 0), ("cr3", 1), ("touch", K, 0), ("touch", K + 1, 0)]
    _refused(_native(modes, 4), rows, 2, 3)


def test_an_invlpg_of_an_old_entry_with_evictions_is_refused(modes):
    # A 3-entry TLB holding K+1, K+2 from before the warm-up, K from it. The chunk's touch of
    # u pushes K+1 out of the sequential TLB, then its invlpg drops K+2: which old entries
    # survive depends on the order of the two, which the proof does not know, so it refuses
    # though the chunk counts what the sequential replay counts.
    native = _native(modes, 3)
    rows = [("touch", K + 1, 0), ("touch", K + 2, 0), ("cr3", 1), ("touch", K, 0),
            ("touch", 0x08048, 0), ("invlpg", K + 2)]
    events = make_events(rows)
    exact, counts, _, end = _sequential(native, GUEST, events, 4, 6)
    mine, my_counts, _, _, read = _speculative(native, GUEST, events, 2, 4, 6)
    assert my_counts == counts and end[0]["tlb_native"] == [K, 0x08048]
    assert not reads.follows(mine, exact, read, (native,))


def test_an_exit_without_vpid_empties_the_old_entries_too(modes):
    # kvm-trunk's own 4-entry TLB holds K+1 from before the warm-up (filled after the last
    # exit, K's shadow fault). The chunk's touch of a new user page is a shadow fault, an
    # exit, which empties the TLB (no VPID): from then on both TLBs are the chunk's, and
    # K+1 is not in the end state.
    trunk = dataclasses.replace(modes["kvm-trunk"], tlb_entries=4)
    rows = [("touch", K, 0), ("touch", K + 1, 0), ("touch", K, 0),    # before the warm-up
            ("touch", K, 0),                                          # the warm-up
            ("touch", 0x08048, 0), ("touch", K, 0)]                   # the chunk
    events = make_events(rows)
    exact, counts, _, end = _sequential(trunk, GUEST, events, 4, 6)
    mine, my_counts, _, my_end, read = _speculative(trunk, GUEST, events, 3, 4, 6)
    assert K + 1 in exact[0]["tlb"] and K + 1 not in mine[0]["tlb"]
    assert reads.follows(mine, exact, read, (trunk,))
    assert my_counts == counts and reads.carried(mine, exact, my_end, read) == end
    assert K + 1 not in end[0]["tlb"]


def test_an_old_user_entry_and_a_mov_cr3_are_refused(modes):
    # The sequential TLB also holds user page u from before the warm-up; the chunk's mov cr3
    # drops it there (it is not global), at a time the proof does not follow: refused,
    # though the chunk counts what the sequential replay counts.
    native = _native(modes, 4)
    rows = [("touch", 0x08048, 0), ("touch", K, 0), ("cr3", 1), ("touch", K, 0)]
    events = make_events(rows)
    exact, counts, _, end = _sequential(native, GUEST, events, 2, 4)
    mine, my_counts, _, _, read = _speculative(native, GUEST, events, 1, 2, 4)
    assert exact[0]["tlb_native"] == [0x08048, K] and my_counts == counts and end[0]["tlb_native"] == [K]
    assert not reads.follows(mine, exact, read, (native,))
