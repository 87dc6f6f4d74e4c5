"""The compiled kernel against the oracle (reference.replay, replay_by_source): random traces
through every shipped mode and through small, varied ones, all in one pass; batch splits;
attribution per source; state snapshots. The hand-worked tests of the other files also run
on the kernel (the `run` and `by_source` fixtures are parametrised over both engines in
conftest.py).
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.tracefile.format import read_events, read_meta
from replay import kernel
from replay.counts import Counts
from replay.events import Events
from replay.kinds import Kind
from replay.mode import Paging
from replay.reference import BUSY, replay_by_source
from replay.reference import replay as oracle
from tests.replay.conftest import GUEST, K, make_events
from tests.replay.strategies import ADDRESSES, APIC_FIELDS, GUESTS, PORTS, examples, span_of, spans, trace_rows, varied_modes

SETTINGS = examples(200)

# Few pages, so state collides: 0x08048/0x08049 share a guest table, 0x08148 shares its
# softmmu slot with 0x08048 in a 256-entry TLB, 0x40000 is another table; kernel pages
# in two global tables.
PAGES = [0x08048, 0x08049, 0x08148, 0x40000, K, K + 1, K + 0x400]
traces = trace_rows(PAGES, max_size=120)


def varied(modes):
    """A shipped mode with tiny, varied state and switches (any paging, any flag)."""
    ports, addresses = (st.sets(st.sampled_from(values), max_size=2).map(frozenset) for values in (PORTS, ADDRESSES))
    return varied_modes(
        modes, list(modes),
        paging=st.sampled_from(list(Paging)),
        dropped_io_ports=ports,
        dropped_io_reads=ports,
        dropped_io_writes=ports,
        dropped_mmio_reads=addresses,
        dropped_mmio_writes=addresses,
        tlb_entries=st.integers(1, 6),
        softmmu_tlb_entries=st.sampled_from([1, 2, 4, 256]),
        shadow_pool_pages=st.integers(2, 6),
        cr3_cache_size=st.integers(0, 4),
        prev_roots=st.integers(0, 3),
        tlb_flush_on_exit=st.booleans(),
        shadow_keep_on_cr3=st.booleans(),
        shadow_update_on_pte_write=st.booleans(),
        **APIC_FIELDS,
    )


def rows_of(table: dict[str, np.ndarray]) -> list[tuple]:
    return sorted(zip(*(table[c].tolist() for c in ("kind", "asid", "device", "driver", "count"))))


def columns(events: Events, lo: int = 0, hi: int | None = None) -> tuple[np.ndarray, ...]:
    return tuple(c[lo:hi] for c in (events.kind, events.value, events.asid, events.arg))


@SETTINGS
@given(data=st.data(), rows=traces)
def test_kernel_equals_oracle_for_every_mode_in_one_pass(modes, data, rows):
    mix = list(modes.values()) + data.draw(st.lists(varied(modes), min_size=1, max_size=4))
    # rows before the first cr3 write run in an address space no cr3 write named
    events = make_events(rows, span_ns=data.draw(spans(rows)), start_asid=data.draw(st.integers(0, 5)))
    guest = data.draw(GUESTS)
    got = kernel.replay_modes(events, guest, mix)
    for mode, counts in zip(mix, got):
        assert counts == oracle(events, guest, mode), mode


@SETTINGS
@given(data=st.data(), rows=traces)
def test_batches_give_the_whole_trace_replay(modes, data, rows):
    mix = list(modes.values()) + data.draw(st.lists(varied(modes), max_size=2))
    events = make_events(rows, span_ns=span_of(rows))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(rows)), max_size=4)))
    guest = data.draw(GUESTS)
    whole, split = kernel.new_state(mix, guest), kernel.new_state(mix, guest)
    kernel.replay_batch(whole, *columns(events))
    for lo, hi in zip([0] + cuts, cuts + [len(rows)]):
        kernel.replay_batch(split, *columns(events, lo, hi))
    assert kernel.counts(split, events.span_ns) == kernel.counts(whole, events.span_ns)
    assert kernel.states_equal(split, whole)
    for m in range(len(mix)):
        assert rows_of(kernel.attribution(split, m, 7)) == rows_of(kernel.attribution(whole, m, 7))


@SETTINGS
@given(data=st.data(), rows=traces)
def test_attribution_sums_to_the_counts_and_counts_events_per_source(modes, data, rows):
    mode = data.draw(st.one_of(st.sampled_from(list(modes.values())), varied(modes)))
    events = make_events(rows, span_ns=data.draw(spans(rows)))
    guest = data.draw(GUESTS)
    state = kernel.new_state([mode], guest)
    kernel.replay_batch(state, *columns(events))
    table = kernel.attribution(state, 0, events.span_ns)
    summed = Counter()
    for driver, count in zip(table["driver"], table["count"]):
        summed[driver] += int(count)
    assert Counts(dict(summed)) == oracle(events, guest, mode)
    # events per source, counted here from the rows themselves
    mine = Counter()
    for k, v, a in zip(events.kind, events.value, events.asid):
        device = int(v) if Kind(k) in (Kind.IO, Kind.MMIO) else -1
        mine[(Kind(k).name.lower(), int(a), device)] += 1
    rows_of_events = table["driver"] == "events"
    assert mine == Counter({(k, int(a), int(d)): int(c) for k, a, d, c in zip(
        table["kind"][rows_of_events], table["asid"][rows_of_events], table["device"][rows_of_events],
        table["count"][rows_of_events])})
    assert (table["count"] > 0).all()


@SETTINGS
@given(data=st.data(), rows=traces)
def test_counts_after_a_reset_are_the_rest_of_the_trace(modes, data, rows):
    # A warm-up prefix replayed, counts reset: the rest counts what the whole trace counts
    # minus what the prefix counted (emulated_ns: each part's span less its own idle time).
    mix = list(modes.values())
    events = make_events(rows, span_ns=span_of(rows))
    cut = data.draw(st.integers(0, len(rows)))
    guest = data.draw(GUESTS)
    whole, chunked = kernel.new_state(mix, guest), kernel.new_state(mix, guest)
    kernel.replay_batch(whole, *columns(events))
    kernel.replay_batch(chunked, *columns(events, 0, cut))
    prefix = kernel.counts(chunked, 0)
    kernel.reset_counts(chunked)
    kernel.replay_batch(chunked, *columns(events, cut))
    rest = kernel.counts(chunked, events.span_ns)
    assert [p + r for p, r in zip(prefix, rest)] == kernel.counts(whole, events.span_ns)
    assert kernel.states_equal(chunked, whole)


@SETTINGS
@given(data=st.data(), rows=traces)
def test_a_restored_snapshot_replays_the_rest_as_the_trace_does(modes, data, rows):
    # A prefix replayed, its snapshot restored into a new state: the same snapshot, and the
    # rest of the trace counts (per source too) and ends as it does after the prefix itself.
    mix = list(modes.values()) + data.draw(st.lists(varied(modes), max_size=3))
    events = make_events(rows, span_ns=span_of(rows), start_asid=data.draw(st.integers(0, 5)))
    cut = data.draw(st.integers(0, len(rows)))
    guest = data.draw(GUESTS)
    prefix, restored = kernel.new_state(mix, guest), kernel.new_state(mix, guest)
    kernel.replay_batch(prefix, *columns(events, 0, cut))
    kernel.restore(restored, kernel.snapshot(prefix))
    assert kernel.snapshot(restored) == kernel.snapshot(prefix)
    kernel.reset_counts(prefix)
    for state in (prefix, restored):
        kernel.replay_batch(state, *columns(events, cut))
    assert kernel.counts(restored, events.span_ns) == kernel.counts(prefix, events.span_ns)
    assert kernel.states_equal(restored, prefix)
    for m in range(len(mix)):
        assert rows_of(kernel.attribution(restored, m, 7)) == rows_of(kernel.attribution(prefix, m, 7))


def test_restore_needs_a_new_state_of_the_snapshots_modes(modes):
    used = kernel.new_state([modes["kvm-trunk"]], GUEST)
    kernel.replay_batch(used, *columns(make_events([("cr3", 1), ("touch", 0x08048, 1)])))
    with pytest.raises(ValueError, match="new state"):
        kernel.restore(used, kernel.snapshot(used))
    with pytest.raises(ValueError, match="new state"):
        kernel.restore(kernel.new_state([modes["native"]] * 2, GUEST), kernel.snapshot(used))


@SETTINGS
@given(data=st.data(), rows=traces)
def test_attribution_equals_the_oracles_per_source(modes, data, rows):
    # Every (source, count, n) of the oracle is a row of the kernel's table, and every row
    # of the table is one of the oracle's: compared as multisets, both ways.
    mix = list(modes.values()) + data.draw(st.lists(varied(modes), min_size=1, max_size=3))
    events = make_events(rows, span_ns=data.draw(spans(rows)), start_asid=data.draw(st.integers(0, 5)))
    guest = data.draw(GUESTS)
    state = kernel.new_state(mix, guest)
    kernel.replay_batch(state, *columns(events))
    for m, mode in enumerate(mix):
        got = Counter(rows_of(kernel.attribution(state, m, events.span_ns)))
        want = Counter((kind_name(kind), asid, device, name, n)
                       for (kind, asid, device), c in replay_by_source(events, guest, mode).items()
                       for name, n in c.values.items())
        assert got - want == Counter(), (mode, "kernel rows the oracle lacks")
        assert want - got == Counter(), (mode, "oracle counts the kernel lacks")


def kind_name(kind: int) -> str:
    """The attribution table's kind: the Kind's name, or "busy" for reference.BUSY."""
    return "busy" if (kind, -1, -1) == BUSY else Kind(kind).name.lower()


def test_attribution_by_hand(modes):
    # paravirt: asid 1 writes port 0x80 (removed: avoided), asid 2 reads port 0x60 (exit),
    # and takes an interrupt (exit); each asid's cr3 write misses the cache and exits.
    rows = [("cr3", 1), ("io", 0x80, 1), ("cr3", 2), ("io", 0x60, 0), ("irq", 0x20)]
    state = kernel.new_state([modes["kvm-paravirt"]], GUEST)
    kernel.replay_batch(state, *columns(make_events(rows)))
    t = kernel.attribution(state, 0, 1000)
    got = {(k, a, d, r): c for k, a, d, r, c in zip(t["kind"], t["asid"], t["device"], t["driver"], t["count"])}
    for asid in (1, 2):
        for driver in ("events", "cr3_writes", "cr3_cache_lookup", "cr3_cache_miss", "exit_cr3",
                       "shadow_root_alloc", "tlb_refill_extra"):
            expected = 0 if driver == "tlb_refill_extra" else 1
            assert got.pop(("cr3_write", asid, -1, driver), 0) == expected
    assert got == {("io", 1, 0x80, "events"): 1, ("io", 1, 0x80, "native_io_avoided"): 1,
                   ("io", 2, 0x60, "events"): 1, ("io", 2, 0x60, "exit_io"): 1,
                   ("irq", 2, -1, "events"): 1, ("irq", 2, -1, "exit_irq"): 1}


def test_a_dropped_mmio_address_beyond_int64(run, vary):
    # Mode tables are int64 in the kernel: an address >= 2**63 is stored wrapped, compared as u64.
    high = 0xFFFF_FFFF_FEE0_00B0
    mode = vary("kvm-pv-modern", dropped_mmio_writes=frozenset({high}))
    # the write is no longer made; the read still exits
    assert run(mode, [("mmio", high, 1), ("mmio", high, 0)]) == Counts(
        {"events": 2, "native_mmio_avoided": 1, "exit_mmio": 1})


def test_snapshot_by_hand(modes):
    # trunk, tlb of 2: cr3 1; touch user A, B (table 0x20), kernel K. Pool (LRU first):
    # root of 1, table (1, 0x20) with PTEs A and B, global table 0x300 with K.
    # Both TLBs keep the last 2: B, K. The cache-less mode has no CR3 cache.
    a, b = 0x08048, 0x08049
    mode = dataclasses.replace(modes["kvm-trunk"], tlb_entries=2)
    state = kernel.new_state([mode], GUEST)
    kernel.replay_batch(state, *columns(make_events([("cr3", 1), ("touch", a), ("touch", b), ("touch", K)])))
    (snap,) = kernel.snapshot(state)
    assert snap["pool"] == [(1, None, ()), (1, 0x20, (a, b)), (None, K >> 10, (K,))]
    assert snap["tlb_native"] == [b, K]
    # the mode's own TLB was flushed by the fault exits of a and b, then K's fault: K only
    assert snap["tlb"] == [K]
    assert snap["cr3_cache"] == []


def test_cr3_cache_snapshot_is_the_fill_order(modes):
    # paravirt, 4 slots filled round robin. History A: cr3 1, 2, 3, 4, 5 -> slots [5, 2, 3, 4],
    # next slot 1, oldest fill first: [2, 3, 4, 5]. History B: cr3 9, 2, 3, 4, 5 (9 evicted by 5)
    # -> the same. History C: cr3 2, 3, 4, 5 (four fills, next slot 0) -> [2, 3, 4, 5] too:
    # each next misses 6 and replaces 2, whatever slot it started at. (The pools differ.)
    pv = modes["kvm-paravirt"]
    states = [kernel.new_state([pv], GUEST) for _ in range(3)]
    for state, spaces in zip(states, ([1, 2, 3, 4, 5], [9, 2, 3, 4, 5], [2, 3, 4, 5])):
        kernel.replay_batch(state, *columns(make_events([("cr3", a) for a in spaces])))
    assert [kernel.snapshot(s)[0]["cr3_cache"] for s in states] == [[2, 3, 4, 5]] * 3


def test_snapshot_of_held_roots(modes):
    # prevroots holds 4 roots: after cr3 1..5 the current is 5, then 4, 3, 2 (1 let go);
    # a fast switch to 3 makes it current: [3, 5, 4, 2]. EPT holds no roots, only its TLB.
    mix = [modes["kvm-shadow-prevroots"], modes["kvm-ept"]]
    state = kernel.new_state(mix, GUEST)
    kernel.replay_batch(state, *columns(make_events([("cr3", a) for a in (1, 2, 3, 4, 5, 3)] + [("touch", K)])))
    prev, ept = kernel.snapshot(state)
    assert prev["roots"] == [3, 5, 4, 2]
    assert ept == {"tlb_native": [K], "tlb": [K]}


def test_equal_states_from_different_histories(modes):
    # native, 1-entry TLB: after (A) or after (B, A) the TLB holds A alone; the ids of A
    # differ between the two replays (first key seen is id 0), the model state does not.
    mode = dataclasses.replace(modes["native"], tlb_entries=1)
    one, two = kernel.new_state([mode], GUEST), kernel.new_state([mode], GUEST)
    kernel.replay_batch(one, *columns(make_events([("touch", 0x08048)])))
    kernel.replay_batch(two, *columns(make_events([("touch", 0x40000), ("touch", 0x08048)])))
    assert kernel.states_equal(one, two)
    kernel.replay_batch(two, *columns(make_events([("touch", 0x40000)])))
    assert not kernel.states_equal(one, two)


def test_states_of_other_modes_are_not_equal(modes):
    assert not kernel.states_equal(kernel.new_state([modes["kvm-trunk"]], GUEST),
                                   kernel.new_state([modes["kvm-paravirt"]], GUEST))


def test_unknown_kind_names_its_row(modes):
    state = kernel.new_state([modes["native"]], GUEST)
    kernel.replay_batch(state, *columns(make_events([("touch", 1)] * 3)))
    bad = columns(make_events([("touch", 1), ("touch", 1)]))
    bad[0][1] = 15
    with pytest.raises(ValueError, match="row 4: unknown event kind 15"):
        kernel.replay_batch(state, *bad)


@pytest.mark.parametrize("change, message", [
    ({"shadow_pool_pages": 1}, "at least 2"),
    ({"paging": Paging.SOFTMMU, "softmmu_tlb_entries": 3}, "power of two"),
    ({"tlb_entries": 0}, "tlb_entries"),
])
def test_sizes_the_reference_rejects(modes, change, message):
    with pytest.raises(ValueError, match=message):
        kernel.new_state([dataclasses.replace(modes["kvm-trunk"], **change)], GUEST)


def test_shipped_lat_ctx_trace_in_every_mode(modes):
    path = Path(__file__).resolve().parents[2] / "traces" / "lat-ctx-2.parquet"
    events = read_events(path, 0, meta := read_meta(path))
    half = len(events) // 2
    state = kernel.new_state(list(modes.values()), meta.guest)
    kernel.replay_batch(state, *columns(events, 0, half))
    kernel.replay_batch(state, *columns(events, half))
    got = kernel.counts(state, events.span_ns)
    assert got == [oracle(events, meta.guest, m) for m in modes.values()]
