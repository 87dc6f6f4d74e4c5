"""Check that `pipeline import` writes the same traces as an earlier revision of itself.

For each FILE, imports it with the code of git revision BASE (exported to a temporary folder
with `git archive`, run in a subprocess) and with the working tree's code, then compares every
column of the two traces row by row, their metadata JSON, and the reports' counts (rows per
kind, unmapped and consumed events, malformed lines, switches, address spaces, CPUs).
Metadata keys listed with --ignore-meta (dotted, e.g. source.syscalls) are left out of the
comparison. Prints one line per file and exits 1 on any difference.

Run: python benchmarks/import_compare.py BASE FILE… [--ignore-meta KEY…]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]

# Runs inside the subprocess: import one file, print the report's counts as JSON.
IMPORT = """
import json, sys
from pathlib import Path
from pipeline.tracefile.importers import import_files
r = import_files([Path(sys.argv[1])], Path(sys.argv[2]), workload="compare")
print(json.dumps({"kinds": dict(r.kinds), "unmapped": dict(r.unmapped), "consumed": dict(r.consumed),
                  "malformed": r.malformed, "examples": r.malformed_examples, "switches": r.switches,
                  "processes": r.processes, "cpus": list(r.cpus), "timestamps": r.timestamps}))
"""


def run_import(code_root: Path, src: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    done = subprocess.run([sys.executable, "-c", IMPORT, str(src), str(out)], env=env, cwd=code_root,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def drop(meta: dict, dotted: list[str]) -> dict:
    for key in dotted:
        *parents, last = key.split(".")
        d = meta
        for p in parents:
            d = d.get(p, {})
        d.pop(last, None)
    return meta


def differences(a: Path, b: Path, ra: dict, rb: dict, ignore: list[str]) -> list[str]:
    ta, tb = pq.read_table(a), pq.read_table(b)
    found = []
    if ta.num_rows != tb.num_rows:
        found.append(f"rows {ta.num_rows} != {tb.num_rows}")
    for name in ta.column_names:
        if ta.num_rows == tb.num_rows and not ta.column(name).equals(tb.column(name)):
            found.append(f"column {name} differs")
    ma = drop(json.loads(pq.read_schema(a).metadata[b"hvreplay"]), ignore)
    mb = drop(json.loads(pq.read_schema(b).metadata[b"hvreplay"]), ignore)
    ma["source"].pop("files"), mb["source"].pop("files")
    if ma != mb:
        found.append(f"metadata {ma} != {mb}")
    found += [f"report {k}: {ra[k]} != {rb[k]}" for k in ra if ra[k] != rb[k]]
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base")
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--ignore-meta", nargs="*", default=[])
    args = ap.parse_args()
    failed = 0
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        base = tmp / "base"
        base.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.base, "pipeline", "replay"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        for i, src in enumerate(args.files):
            a, b = tmp / f"{i}.base.parquet", tmp / f"{i}.new.parquet"
            found = differences(a, b, run_import(base, src.resolve(), a), run_import(ROOT, src.resolve(), b),
                                args.ignore_meta)
            failed += bool(found)
            print(f"{'DIFF' if found else 'same'}  {src.name[:70]}" + "".join(f"\n      {f}" for f in found))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
