"""Analysis of counts: pricing them with a cost profile (`pricing.py`), attribution by source
(`attribution.py`), fitting costs to measurements (`calibrate.py`), mode-setting sweeps
(`sweep.py`), comparing two results folders (`diff.py`), and host-side KVM exit statistics
(`kvm_stat.py`).

May import: `pipeline.config`, `pipeline.tracefile`, `pipeline.run`, `replay`,
`pipeline.atomic`, `pipeline.text` (`pricing.py` only `pipeline.config`: `run` imports it).
"""
