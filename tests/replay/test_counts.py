"""Counts algebra (shards merge by +, serial == sharded) and the event columns' checks."""
from __future__ import annotations

import numpy as np
import pytest

from replay.counts import ALL_COUNTS, DRIVERS, EXITS, INFO, Counts
from replay.events import Events
from replay.kinds import MAX_KIND


def test_missing_names_are_zero():
    c = Counts({"exit_cr3": 3})
    assert c["exit_cr3"] == 3
    assert c["exit_io"] == 0


def test_add_merges_name_by_name():
    a = Counts({"exit_cr3": 3, "events": 10})
    b = Counts({"exit_cr3": 2, "exit_io": 5})
    # exit_cr3 3 + 2 = 5, events 10 + 0, exit_io 0 + 5
    assert a + b == Counts({"exit_cr3": 5, "events": 10, "exit_io": 5})
    assert a + b == b + a
    assert a + Counts() == a


def test_equality_ignores_explicit_zeros():
    assert Counts({"exit_cr3": 0}) == Counts()
    assert Counts({"exit_cr3": 1}) != Counts()
    assert hash(Counts({"exit_cr3": 0, "events": 4})) == hash(Counts({"events": 4}))
    assert Counts() != {"exit_cr3": 0}     # not a Counts: not equal


def test_the_exits_are_the_drivers_described_as_vm_exits():
    # EXITS is named, not read off a prefix: it must still be exactly the priced drivers whose
    # description says they leave the guest (so a new exit driver cannot be left out of it).
    assert EXITS == {n for n, text in DRIVERS.items() if text.startswith("VM exit")}
    assert len(EXITS) == 20


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="exit_bogus"):
        Counts({"exit_bogus": 1})
    with pytest.raises(ValueError, match="tlb_misses"):
        Counts({"exit_cr3": 1}) + Counts({"tlb_misses": 1})


def test_as_row_has_every_name_in_order():
    row = Counts({"exit_io": 2}).as_row()
    assert list(row) == list(ALL_COUNTS) == list(DRIVERS) + list(INFO)
    assert row["exit_io"] == 2 and sum(row.values()) == 2


def test_no_name_is_both_driver_and_info():
    assert not set(DRIVERS) & set(INFO)


# --- Events --------------------------------------------------------------------------

def columns(kinds):
    n = len(kinds)
    return dict(kind=np.array(kinds, dtype=np.uint8), value=np.zeros(n, np.uint64),
                asid=np.zeros(n, np.uint32), arg=np.zeros(n, np.uint32))


def test_unknown_kind_names_the_row():
    # rows 0 and 1 are cr3_write / touch; row 2 has code 15, one past ipi_send (14).
    with pytest.raises(ValueError, match=r"row 2: unknown event kind 15"):
        Events(**columns([0, 1, 15, 200]), span_ns=1)


def test_highest_known_kind_is_accepted():
    assert len(Events(**columns([int(MAX_KIND)]), span_ns=1)) == 1


def test_columns_must_have_equal_length():
    cols = columns([0, 1])
    cols["arg"] = np.zeros(3, np.uint32)
    with pytest.raises(ValueError, match="differ in length"):
        Events(**cols, span_ns=1)
