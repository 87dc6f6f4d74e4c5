"""runner.plan_groups: the shards of one trace's vCPU are replayed in one pass (one task),
split by mode only when there are fewer traces than workers."""
from __future__ import annotations

from pipeline.config.modes import load_modes
from pipeline.run.runner import plan_groups as plan
from pipeline.run.shards import Shard
from tests.pipeline.tracefiles import SEED_MODES


def _shards(traces: list[str], cpus: tuple[int, ...] = (0,)) -> list[Shard]:
    return [Shard(t, f"/{t}.parquet", cpu, mode, None, "") for t in traces for mode in SEED_MODES for cpu in cpus]  # type: ignore[arg-type]


def plan_groups(shards: list[Shard], workers: int):
    return plan(shards, workers, load_modes())


def _modes(groups) -> list[list[str]]:
    return [[s.mode for s in g.shards] for g in groups]


def test_one_group_per_trace_when_traces_keep_the_workers_busy() -> None:
    groups = plan_groups(_shards(["a", "b", "c"]), workers=2)
    assert [{s.trace for s in g.shards} for g in groups] == [{"a"}, {"b"}, {"c"}]
    assert _modes(groups) == [SEED_MODES] * 3


def test_one_trace_on_two_workers_is_split_by_mode_cost() -> None:
    # Costs: the three shadow modes 2 each, native and qemu 1. Costliest first, each to the
    # cheaper group (the first on a tie): upstream -> 0, trunk -> 1, paravirt -> 0 (2 = 2),
    # native -> 1 (2 < 4), qemu -> 1 (3 < 4): 4 against 4, each group in the modes' order.
    assert _modes(plan_groups(_shards(["a"]), workers=2)) == [
        ["kvm-upstream", "kvm-paravirt"], ["native", "qemu", "kvm-trunk"]]
    assert _modes(plan_groups(_shards(["a"]), workers=1)) == [SEED_MODES]
    assert len(plan_groups(_shards(["a"]), workers=64)) == len(SEED_MODES)   # never an empty group


def test_each_vcpu_is_its_own_group() -> None:
    groups = plan_groups(_shards(["a"], cpus=(0, 1)), workers=2)
    assert [(g.first.cpu, len(g.shards)) for g in groups] == [(0, 5), (1, 5)]
