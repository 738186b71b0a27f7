"""Alibi Detect's Kolmogorov-Smirnov drift detector: fit, save, load.

alibi-detect 0.11.4 is the last Apache-2.0 release (0.12 and later are under the Business Source
License). Its package ``__init__`` imports its saving module, written for pydantic 1; kserve needs
pydantic 2, which ships the pydantic 1 API as ``pydantic.v1``. So alibi-detect is imported here, once,
with ``pydantic`` resolving to ``pydantic.v1`` for the duration of that import only; nothing else in
the process sees the alias. Its import also asks transformers for a deep-learning backend (we use
none), whose notice is silenced.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

import numpy as np


@contextlib.contextmanager
def _pydantic_v1_as_pydantic():
    import pydantic
    import pydantic.fields
    import pydantic.v1
    import pydantic.v1.fields

    saved = {name: sys.modules[name] for name in ("pydantic", "pydantic.fields")}
    sys.modules["pydantic"], sys.modules["pydantic.fields"] = pydantic.v1, pydantic.v1.fields
    try:
        yield
    finally:
        sys.modules.update(saved)


@cache
def alibi() -> ModuleType:
    """The ``alibi_detect`` package (imported on first use; it takes a few seconds)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # "None of PyTorch, TensorFlow ... found"
    with _pydantic_v1_as_pydantic():
        import alibi_detect
        import alibi_detect.cd
        import alibi_detect.saving
    # its saver logs "Directory ... does not exist and is now created" at WARNING for every model
    logging.getLogger("alibi_detect.saving").setLevel(logging.ERROR)
    return alibi_detect


def ks_detector(reference: np.ndarray, p_value: float):
    """A feature-wise K-S detector (Bonferroni-corrected) on ``reference`` rows."""
    return alibi().cd.KSDrift(np.asarray(reference, dtype=np.float32), p_val=p_value)


def verdict(p_values: np.ndarray, threshold: float, share: float) -> tuple[list[bool], bool]:
    """Which features drifted (p below the detector's Bonferroni-corrected threshold) and whether the data did.

    The data drifted when at least ``share`` of the features did, as Evidently's dataset-drift rule: one
    feature below the threshold (Alibi Detect's own ``is_drift``) fires on ordinary weeks of one household.
    """
    drifted = [bool(p < threshold) for p in np.atleast_1d(p_values)]
    return drifted, bool(drifted) and sum(drifted) >= share * len(drifted)


def save(detector, path: str | Path) -> None:
    """Write ``detector`` in Alibi Detect's own format (a directory)."""
    alibi().saving.save_detector(detector, str(path))


def load(path: str | Path):
    """Read a detector written by :func:`save`."""
    return alibi().saving.load_detector(str(path))
