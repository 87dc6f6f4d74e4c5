"""Configuration and metadata mistakes: one error naming the file, the key and the problem."""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.config.errors import ConfigError
from pipeline.config.modes import DEFAULT_DIR, load_modes
from pipeline.config.cost_profile import START_PROFILE, load_profile
from pipeline.tracefile.format import TraceError, validate
from tests.pipeline.tracefiles import rewrite_meta, round_robin_events, write_events


def modes_with(tmp_path: Path, text: str) -> Path:
    """The shipped modes plus one extra file."""
    d = tmp_path / "modes"
    d.mkdir()
    for f in DEFAULT_DIR.glob("*.toml"):
        (d / f.name).write_text(f.read_text())
    (d / "mine.toml").write_text(text)
    return d


@pytest.mark.parametrize("body, key, problem", [
    ('name = "m"\npaging = "shadow"\ncr3_cache_sise = 4\n', "cr3_cache_sise", "unknown key"),
    ('name = "m"\npaging = "nested"\n', "paging", "must be one of"),
    ('name = "m"\npaging = "shadow"\ntlb_entries = 0\n', "tlb_entries", "in 1..1048576, got 0"),
    ('name = "m"\npaging = "shadow"\nshadow_pool_pages = 1\n', "shadow_pool_pages", "in 2..4194304, got 1"),
    ('name = "m"\npaging = "softmmu"\nsoftmmu_tlb_entries = 100\n', "softmmu_tlb_entries", "power of two"),
    ('name = "m"\npaging = "shadow"\ntlb_flush_on_exit = "yes"\n', "tlb_flush_on_exit", "true or false"),
    ('name = "m"\npaging = "shadow"\n[on_event]\nwrmsr = "exit_msr"\n', "on_event.wrmsr", "unknown event kind"),
    ('name = "m"\npaging = "shadow"\n[on_event]\nio = "exit_port"\n', "on_event.io", "unknown driver"),
    ('inherits = "kvm-nothing"\nname = "m"\n', "inherits", "does not exist"),
    ('name = "m"\npaging = "shadow"\ndropped_io_ports = ["0x80"]\n', "dropped_io_ports", "list of integers"),
    ('name = "m"\npaging = [\n', "", "cannot parse TOML"),
    ('inherits = "m"\nname = "m"\n', "inherits", "inheritance cycle"),
    ('inherits = ["kvm-trunk"]\nname = "m"\n', "inherits", "must be a string"),
    ('name = "m"\npaging = "tdp"\ndescription = 3\n', "description", "must be a string"),
    ('name = "kvm-trunk"\npaging = "shadow"\n', "name", "already defined in"),
    ('name = "m"\npaging = "shadow"\n[on_event]\nio = 5\n', "on_event.io", "driver name in quotes"),
    ('name = "m"\npaging = "shadow"\nprev_roots = -1\n', "prev_roots", "in 0..256, got -1"),
    ('name = "m"\npaging = "tdp"\ndropped_io_writes = [0x10000]\n', "dropped_io_writes", "outside 0..0xffff"),
    ('name = "m"\npaging = "tdp"\ndropped_mmio_reads = "0xFED000F0"\n', "dropped_mmio_reads", "list of integers"),
    # Sizes past their bound (replay/mode.py SIZES): 2**40 softmmu entries would allocate 16 TiB.
    ('name = "m"\npaging = "softmmu"\nsoftmmu_tlb_entries = 0x10000000000\n', "softmmu_tlb_entries",
     "in 1..4194304, got 1099511627776"),
    ('name = "m"\npaging = "shadow"\ntlb_entries = 1048577\n', "tlb_entries", "in 1..1048576"),
    ('name = "m"\npaging = "shadow"\nshadow_pool_pages = 0x400001\n', "shadow_pool_pages", "in 2..4194304"),
    ('name = "m"\npaging = "shadow"\ncr3_cache_size = 257\n', "cr3_cache_size", "in 0..256, got 257"),
    ('name = "m"\npaging = "shadow"\nprev_roots = 0x7fffffffffffffff\n', "prev_roots", "in 0..256"),
    # Names become folder names under --out: no separators, no '..', no NUL, bounded.
    ('name = "a/../../../victim"\npaging = "tdp"\n', "name", "'a/../../../victim': a mode name is"),
    ('name = "/tmp/victim"\npaging = "tdp"\n', "name", "a mode name is 1-200 letters"),
    ('name = ".."\npaging = "tdp"\n', "name", "starting with a letter or digit"),
    ('name = "a\\u0000b"\npaging = "tdp"\n', "name", "'a\\x00b': a mode name is"),
    (f'name = "{"m" * 201}"\npaging = "tdp"\n', "name", "a mode name is 1-200"),
])
def test_mode_file_mistakes_name_file_and_key(tmp_path: Path, body: str, key: str, problem: str) -> None:
    d = modes_with(tmp_path, body)
    with pytest.raises(ConfigError) as e:
        load_modes(d)
    message = str(e.value)
    prefix = f"{d / 'mine.toml'}: {key}: " if key else f"{d / 'mine.toml'}: "
    assert message.startswith(prefix), message
    assert problem in message and "\n" not in message


def test_a_new_mode_needs_no_code(tmp_path: Path) -> None:
    d = modes_with(tmp_path, 'inherits = "kvm-paravirt"\nname = "kvm-paravirt-8"\norder = 55\ncr3_cache_size = 8\n')
    modes = load_modes(d)
    names = list(modes)  # order 55: right after kvm-paravirt (50), before the modern modes (60+)
    assert names[names.index("kvm-paravirt") + 1] == "kvm-paravirt-8"
    assert modes["kvm-paravirt-8"].cr3_cache_size == 8
    assert modes["kvm-paravirt-8"].dropped_io_ports == modes["kvm-paravirt"].dropped_io_ports


def test_an_inheritance_cycle_across_files(tmp_path: Path) -> None:
    d = modes_with(tmp_path, 'inherits = "b"\nname = "a"\n')
    (d / "z.toml").write_text('inherits = "a"\nname = "b"\n')
    with pytest.raises(ConfigError, match=r"(mine|z)\.toml: inherits: inheritance cycle"):
        load_modes(d)


def test_user_folders_load_with_the_shipped_modes(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "a.toml").write_text('inherits = "kvm-ept-vpid"\nname = "ept-big-tlb"\ntlb_entries = 1536\n')
    modes = load_modes(extra=[mine])
    assert list(modes)[-1] == "ept-big-tlb" and modes["ept-big-tlb"].tlb_entries == 1536
    assert load_modes(extra=[mine / "a.toml"]) == modes  # a file works as well as its folder
    with pytest.raises(ConfigError, match=r"nowhere: no such mode folder or file"):
        load_modes(extra=[tmp_path / "nowhere"])


def test_profile_missing_cost_names_the_driver(tmp_path: Path) -> None:
    text = START_PROFILE.read_text().replace("[costs.exit_cr3]", "[costs.exit_cr3_typo]")
    (tmp_path / "p.toml").write_text(text)
    with pytest.raises(ConfigError, match=r"p\.toml: costs\.exit_cr3: missing"):
        load_profile(tmp_path / "p.toml")


def test_profile_cost_outside_its_range(tmp_path: Path) -> None:
    text = START_PROFILE.read_text().replace("ns = 4300", "ns = 99999", 1)
    (tmp_path / "p.toml").write_text(text)
    with pytest.raises(ConfigError, match=r"costs\.exit_cr3: ns=99999.0 outside its range"):
        load_profile(tmp_path / "p.toml")


EXIT_CR3 = 'ns = 4300\nlow = 1500\nhigh = 8000\ncategory = "cr3"'   # [costs.exit_cr3] in START_PROFILE


@pytest.mark.parametrize("old, new, key, problem", [
    (EXIT_CR3, 'ns = -5\nlow = -10\nhigh = 8000\ncategory = "cr3"', "costs.exit_cr3.ns", "must be a number of ns >= 0, got -5"),
    (EXIT_CR3, 'ns = 4300\nlow = -10\nhigh = 8000\ncategory = "cr3"', "costs.exit_cr3.low", ">= 0, got -10"),
    (EXIT_CR3, 'ns = 4300\nlow = 1500\nhigh = 8000\ncategory = 7', "costs.exit_cr3.category", "must be a string, got 7"),
    (EXIT_CR3, 'ns = 4300\nlow = 9000\nhigh = 1500\ncategory = "cr3"', "costs.exit_cr3", "range [9000.0, 1500.0] is reversed"),
    (EXIT_CR3, 'ns = nan\nlow = 1500\nhigh = 8000\ncategory = "cr3"', "costs.exit_cr3.ns", "got nan"),
    (EXIT_CR3, 'ns = 4300\nlow = 1500\nhigh = inf\ncategory = "cr3"', "costs.exit_cr3.high", "got inf"),
    (EXIT_CR3, 'ns = "4300"\nlow = 1500\nhigh = 8000\ncategory = "cr3"', "costs.exit_cr3.ns", "got '4300'"),
    (EXIT_CR3, 'ns = true\nlow = 1500\nhigh = 8000\ncategory = "cr3"', "costs.exit_cr3.ns", "got True"),
    # A saving (the native time of an access a paravirt guest drops) is <= 0, never a cost.
    ('ns = -1000\nlow = -2000\nhigh = -300', 'ns = 1000\nlow = -2000\nhigh = 3000', "costs.native_io_avoided.ns",
     "must be a number of ns <= 0, got 1000"),
    ("switch_ns = 617", 'switch_ns = "fast"', "native.switch_ns", "must be a number of ns >= 0"),
])
def test_profile_mistakes_name_file_and_key(tmp_path: Path, old: str, new: str, key: str, problem: str) -> None:
    text = START_PROFILE.read_text()
    assert text.count(old) == 1
    (tmp_path / "p.toml").write_text(text.replace(old, new))
    with pytest.raises(ConfigError) as e:
        load_profile(tmp_path / "p.toml")
    assert str(e.value).startswith(f"{tmp_path / 'p.toml'}: {key}: ") and problem in str(e.value), str(e.value)


@pytest.mark.parametrize("change, problem", [
    (lambda m: m.update(ops="40000"), "field 'ops' is str, expected int"),
    (lambda m: m.pop("version"), "missing field 'version'"),
    (lambda m: m.update(cpus=[0, "1"]), "cpus must be a non-empty list of distinct integers in 0..65535"),
    (lambda m: m.update(cpus=[0, 65536]), "cpus must be a non-empty list of distinct integers in 0..65535"),
    (lambda m: m.update(cpus=[0, 0]), "cpus must be a non-empty list of distinct integers"),
    (lambda m: m.update(cpus=[]), "cpus must be a non-empty list"),
    (lambda m: m.update(native_ns=2**70), f"native_ns must be in 1..{2**63 - 1}, got {2**70}"),
    (lambda m: m.update(ops=0), f"ops must be in 1..{2**63 - 1}, got 0"),
    (lambda m: m.update(guest={"kernel_vpn_min": 2**64}), f"guest.kernel_vpn_min must be in 0..{2**64 - 1}"),
    (lambda m: m.update(guest={"kernel_vpn_min": -1}), "guest.kernel_vpn_min must be in 0.."),
    (lambda m: m.update(version=2), "trace format version 2"),
    (lambda m: m.update(colour="blue"), "unknown field(s) ['colour']"),
])
def test_bad_metadata_is_a_trace_error(tmp_path: Path, change, problem: str) -> None:
    path = write_events(tmp_path / "t.parquet", round_robin_events(2, 2))
    rewrite_meta(path, change)
    with pytest.raises(TraceError) as e:
        validate(path)
    assert str(e.value).startswith(f"{path}: ") and problem in str(e.value)


def test_rows_of_an_unlisted_cpu_are_an_error_not_dropped(tmp_path: Path) -> None:
    path = write_events(tmp_path / "t.parquet", round_robin_events(2, 2))
    table = pq.read_table(path)
    cpu = table.column("cpu").to_numpy().copy()
    cpu[5] = 1  # metadata lists only cpu 0
    i = table.schema.get_field_index("cpu")
    pq.write_table(table.set_column(i, table.schema.field(i), [cpu]), path)
    with pytest.raises(TraceError, match=r"row 5: cpu 1 not listed in metadata cpus"):
        validate(path)
