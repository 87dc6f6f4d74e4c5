"""Trace files in and out: the v1 Parquet format (`format.py`: writing, reading, checking),
the line prefix shared by text traces and the opening of (compressed) text files
(`textlines.py`), the guest-side importers (`importers/`), and `perf record` (`record.py`).

May import: `pipeline.config`, `replay`, `pipeline.atomic`, `pipeline.text`.
"""
