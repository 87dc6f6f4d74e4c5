"""The Mode record: its one check of a mode's values (ModeError names the field), the paging
table both engines read, and the busy time no event causes."""
from __future__ import annotations

import copy
import dataclasses

import pytest

from replay.counts import Counts
from replay.kinds import Kind
from replay.mode import PAGING, Mode, ModeError, Paging


@pytest.mark.parametrize("change, key, problem", [
    ({"name": "a/../victim"}, "name", "'a/../victim': a mode name is 1-200 letters"),
    ({"name": "m" * 201}, "name", "a mode name is 1-200"),
    ({"paging": "shadow"}, "paging", "must be one of ['native', 'softmmu', 'shadow', 'tdp']"),
    ({"on_event": {Kind.IO: "exit_port"}}, "on_event.io", "unknown driver 'exit_port'"),
    ({"on_event": {"io": "exit_io"}}, "on_event", "'io' is not an event kind"),
    ({"dropped_io_ports": frozenset({0x10000})}, "dropped_io_ports", "0x10000 is outside 0..0xffff"),
    ({"dropped_mmio_reads": [1]}, "dropped_mmio_reads", "must be a set of integers"),
    ({"tlb_entries": 0}, "tlb_entries", "in 1..1048576, got 0 (a TLB holds at least one entry)"),
    ({"tlb_entries": 2**20 + 1}, "tlb_entries", "in 1..1048576, got 1048577"),
    ({"tlb_entries": 4.0}, "tlb_entries", "must be an integer in 1..1048576, got 4.0"),
    ({"shadow_pool_pages": 1}, "shadow_pool_pages", "in 2..4194304, got 1 (a shadow pool needs at least 2 pages"),
    ({"cr3_cache_size": True}, "cr3_cache_size", "must be an integer in 0..256, got True"),
    ({"prev_roots": -1}, "prev_roots", "in 0..256, got -1 (0 = no held roots"),
    ({"softmmu_tlb_entries": 3}, "softmmu_tlb_entries", "must be a power of two (direct mapped), got 3"),
    ({"tlb_flush_on_exit": 1}, "tlb_flush_on_exit", "must be true or false, got 1"),
])
def test_a_mode_the_model_cannot_replay_is_refused_naming_the_field(modes, change, key, problem):
    with pytest.raises(ModeError) as e:
        dataclasses.replace(modes["kvm-trunk"], **change)
    assert e.value.key == key and problem in e.value.problem
    assert str(e.value) == f"{key}: {e.value.problem}"


def test_a_copy_renamed_after_the_fact_is_not_checked_again(modes):
    # Only building a Mode checks it: a copy (or a pickle, as Dask sends it) is not rebuilt,
    # so tests of the writers can still make an evil name (tests/pipeline/test_out_safety.py).
    mode = copy.copy(modes["native"])
    object.__setattr__(mode, "name", "a/../victim")
    assert mode.name == "a/../victim"


def test_every_paging_scheme_has_its_features():
    assert set(PAGING) == set(Paging)
    # Shadow paging replays its own TLB (exits flush it); only TDP walks in two dimensions.
    assert [p for p, f in PAGING.items() if f.own_tlb] == [Paging.SHADOW, Paging.TDP]
    assert [p for p, f in PAGING.items() if f.walks_2d] == [Paging.TDP]


def test_only_qemu_has_busy_time_of_its_own(modes):
    # 1000 ns span, 300 idle: QEMU translates the other 700; the rest run guest code natively.
    assert modes["qemu"].busy_counts(1000, 300) == Counts({"emulated_ns": 700})
    assert all(m.busy_counts(1000, 300).values == {} for name, m in modes.items() if name != "qemu")
    assert Mode("q", Paging.SOFTMMU).busy_counts(500, 500).values == {}  # all idle: no row at all
