"""Configuration as data, read from `configs/`: modes (`modes.py`, onto `replay.mode.Mode`),
hardware cost profiles (`cost_profile.py`), reference measurements (`measurements.py`), the
units a result is shown in (`units.py`), and the one error type for a bad file or key
(`errors.py`: one line naming the file and key).

May import: `replay`, `pipeline.atomic`, `pipeline.text`. Nothing else in `pipeline`.
"""
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[2] / "configs"   # the repository's configs/ folder
