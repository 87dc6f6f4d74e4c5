"""Running: traces found and split into shards (`shards.py`), replayed on Dask
(`runner.py`, whole or in exact chunks: `chunked.py`), resumed (`manifest.py`), written as
result files and the summary (`results.py`) inside an --out held by one run (`outdir.py`).

May import: `pipeline.config`, `pipeline.tracefile`, `pipeline.analysis.pricing` (a summary
is priced as it is made), `replay`, `pipeline.atomic`, `pipeline.text`.
"""
