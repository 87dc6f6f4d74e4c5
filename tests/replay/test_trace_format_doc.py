"""traces/README.md agrees with the code: its kind table is KIND_FIELDS, its example runs."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.tracefile.format import META_KEY, SCHEMA, TraceError, TraceMeta, read_events, validate
from replay.kinds import KIND_FIELDS, Kind
from replay.reference import replay

README = Path(__file__).resolve().parents[2] / "traces" / "README.md"


def readme() -> str:
    return README.read_text()


def section(title: str) -> str:
    text = readme()
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def table_rows(text: str) -> list[list[str]]:
    rows = [ln for ln in text.splitlines() if ln.startswith("| ")]
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in rows[1:]]  # skip header


def test_kind_table_is_kind_fields():
    rows = table_rows(section("Event kinds"))
    assert [int(r[0]) for r in rows] == [int(k) for k in Kind]
    for code, name, value, arg, _when in rows:
        kind = Kind(int(code))
        assert name == f"`{kind.name.lower()}`"
        assert (value, arg) == KIND_FIELDS[kind], kind.name


def test_column_table_is_schema():
    rows = table_rows(section("Columns"))
    assert [(r[0], r[1]) for r in rows] == [(f"`{f.name}`", f"`{f.type}`") for f in SCHEMA]


def test_metadata_table_lists_every_field():
    rows = table_rows(section("Metadata"))
    documented = {r[0].strip("`") for r in rows}
    fields = {f.name for f in dataclasses.fields(TraceMeta)}
    assert documented == fields | {"format", "guest.kernel_vpn_min"}


@pytest.fixture
def example(tmp_path, monkeypatch) -> Path:
    """Run the README's Python example in a scratch folder; the trace it writes."""
    code = re.search(r"```python\n(.*?)```", section("Example: a valid 5-event trace"), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})
    return tmp_path / "example.parquet"


def test_readme_example_writes_a_valid_trace(example):
    meta = validate(example)
    assert (meta.workload, meta.native_ns, meta.ops, meta.op_unit) == ("example", 2000, 1, "run")
    assert pq.read_table(example).num_rows == 5
    # The metadata shown in the README is what the example writes.
    shown = re.search(r"```json\n(.*?)```", section("Metadata"), re.S).group(1)
    written = pq.read_schema(example).metadata[META_KEY]
    assert json.loads(shown) == json.loads(written)


def test_readme_example_counts(example, modes):
    meta = validate(example)
    events = read_events(example, 0, meta)
    # kvm-trunk: cr3 exit; user and kernel page each a new shadow table -> 2 shadow faults;
    # port 0x80 -> exit_io; hlt -> exit_hlt (as the README states).
    trunk = replay(events, meta.guest, modes["kvm-trunk"])
    assert (trunk["exit_cr3"], trunk["exit_shadow_fault"], trunk["exit_io"], trunk["exit_hlt"]) == (1, 2, 1, 1)
    # kvm-paravirt: the port-0x80 write is gone instead of exiting.
    pv = replay(events, meta.guest, modes["kvm-paravirt"])
    assert (pv["exit_io"], pv["native_io_avoided"]) == (0, 1)
    # qemu: 2,000 ns span - 1,500 idle = 500 ns of translated code.
    assert replay(events, meta.guest, modes["qemu"])["emulated_ns"] == 500


def test_validate_names_the_row_of_an_unknown_kind(example, tmp_path):
    table = pq.read_table(example)
    kinds = table.column("kind").to_pylist()
    kinds[3] = 15
    bad = table.set_column(table.schema.get_field_index("kind"), "kind", pa.array(kinds, pa.uint8()))
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(TraceError, match=r"row 3: unknown event kind 15"):
        validate(tmp_path / "bad.parquet")
