"""Properties that hold for any trace: random small traces through seed modes and variations."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from replay.counts import DRIVERS, EXITS
from tests.replay.conftest import make_events
from tests.replay.strategies import KERNEL, USER, examples, span_of, trace_rows, varied_modes

traces = trace_rows(USER + KERNEL, max_size=80)

SHADOW_SEED = ["kvm-upstream", "kvm-trunk", "kvm-paravirt"]
SETTINGS = examples(300)


def shadow_mode(modes):
    """A seed shadow mode, or one with tiny, varied state (and VPID on or off)."""
    seed = st.sampled_from(SHADOW_SEED).map(lambda n: modes[n])
    varied = varied_modes(
        modes, SHADOW_SEED,
        tlb_entries=st.integers(1, 8),
        shadow_pool_pages=st.integers(2, 8),
        cr3_cache_size=st.integers(0, 4),
        tlb_flush_on_exit=st.booleans(),
        shadow_keep_on_cr3=st.booleans(),
        shadow_update_on_pte_write=st.booleans(),
    )
    return st.one_of(seed, varied)


@SETTINGS
@given(data=st.data(), rows=traces)
def test_shadow_modes_never_refill_less_than_native(run, modes, data, rows):
    mode = data.draw(shadow_mode(modes))
    c = run(mode, rows, span_ns=span_of(rows))
    # The virtualized TLB sees the same accesses as native's, the same non-global
    # flushes on every mov cr3 and invlpg, and extra whole flushes: it can only miss more.
    assert c["tlb_refill_extra"] >= 0
    assert c["tlb_refill_extra"] == c["tlb_miss"] - c["tlb_miss_native"]
    if not mode.tlb_flush_on_exit:
        assert c["tlb_refill_extra"] == 0   # no extra flushes at all: identical TLBs


@SETTINGS
@given(data=st.data(), rows=traces)
def test_shadow_mode_bookkeeping(run, modes, data, rows):
    mode = data.draw(shadow_mode(modes))
    c = run(mode, rows, span_ns=span_of(rows))
    assert all(v >= 0 for v in c.values.values())
    assert c["events"] == len(rows)
    writes = sum(1 for r in rows if r[0] == "cr3")
    assert c["cr3_writes"] == writes
    if mode.cr3_cache_size:
        assert c["cr3_cache_lookup"] == writes
        assert c["cr3_cache_hit"] + c["cr3_cache_miss"] == writes
    else:
        assert c["cr3_cache_lookup"] == c["cr3_cache_hit"] == 0
    # Every CR3 write that is not a cache hit exits and finds or builds its root.
    assert c["exit_cr3"] == writes - c["cr3_cache_hit"]
    assert c["shadow_root_alloc"] + c["shadow_root_hit"] == c["exit_cr3"]
    # A page is zapped at most once per allocation.
    assert c["shadow_page_zap"] <= c["shadow_root_alloc"] + c["shadow_page_alloc"]
    # The paravirt guest drops its ports instead of exiting; nothing else does.
    accesses = [(r[1], r[2]) for r in rows if r[0] == "io"]
    dropped = sum(1 for p, d in accesses
                  if p in mode.dropped_io_ports or (d == 0 and p in mode.dropped_io_reads))
    assert (c["native_io_avoided"], c["exit_io"]) == (dropped, len(accesses) - dropped)


@SETTINGS
@given(rows=traces)
def test_native_has_no_exits_or_virtualization_drivers(run, rows):
    c = run("native", rows, span_ns=span_of(rows))
    assert not [n for n in c.values if n in EXITS]
    assert not [n for n in DRIVERS if c[n]]
    assert c["events"] == len(rows)


@SETTINGS
@given(rows=traces)
def test_qemu_never_exits_and_emulates_all_busy_time(run, rows):
    span = span_of(rows)
    c = run("qemu", rows, span_ns=span)
    assert not [n for n in c.values if n in EXITS]
    assert c["emulated_ns"] == span - c["idle_ns"] == 1000
    assert c["softmmu_flush"] == sum(1 for r in rows if r[0] == "cr3")
    assert c["softmmu_fill"] <= sum(1 for r in rows if r[0] == "touch")


@SETTINGS
@given(rows=traces)
def test_replay_is_deterministic(run, modes, rows):
    events = make_events(rows, span_ns=span_of(rows))
    for name in modes:
        assert run(name, events) == run(name, events)
