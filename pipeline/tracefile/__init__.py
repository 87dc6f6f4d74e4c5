"""Trace files in and out: the v1 Parquet format (`format.py`: writing, reading, checking),
the line prefix shared by text traces and the opening of (compressed) text files
(`textlines.py`), the readers of text traces (`importers/`: the guest-side importers, and the
host-side KVM exits `kvm-stat` summarises), and `perf record` (`record.py`).

May import: `pipeline.config`, `replay`, `pipeline.atomic`, `pipeline.text`.
"""
