"""Small task functions for :mod:`experiments.runner`: a worked example and the runner's tests.

They live in the installed package, not in ``tests/``, so that every kind of worker can
import them by name: processes started with ``spawn`` and Dask worker processes import the
task's module afresh, and ``experiments`` is importable wherever gelav is installed,
whatever the current folder or pytest's import mode.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["normal_block", "EXIT_AFTER_ENV"]

#: With ``log`` set, a call that finds at least this many lines in the log ends its process
#: at once with ``os._exit(3)``: a kill after that many tasks, for the resumption test.
EXIT_AFTER_ENV = "GELAV_DEMO_EXIT_AFTER"


def normal_block(
    key: Mapping[str, Any],
    seed: np.random.Generator | np.random.SeedSequence,
    *,
    reps: int = 4,
    log: str | None = None,
    fail_on: Sequence[Mapping[str, Any]] = (),
) -> dict[str, np.ndarray]:
    """Sample mean and variance of ``reps`` independent samples of ``key["n"]`` standard normals.

    Returns the columns ``rep`` (0..reps-1), ``mean`` and ``var`` (ddof=1), one row per
    replication.  ``seed`` may be a Generator or a SeedSequence.

    Instrumentation for tests: ``log`` is a text file to which each call appends its key as
    one JSON line before computing (so the log counts how often each task ran); a task
    whose key contains all items of some mapping in ``fail_on`` raises ``ValueError``; see
    also :data:`EXIT_AFTER_ENV`.
    """
    if log is not None:
        exit_after = os.environ.get(EXIT_AFTER_ENV)
        if exit_after is not None and os.path.exists(log):
            with open(log, encoding="utf-8") as f:
                if sum(1 for _ in f) >= int(exit_after):
                    os._exit(3)
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(dict(key), sort_keys=True) + "\n")
    for pattern in fail_on:
        if all(key.get(k) == v for k, v in pattern.items()):
            raise ValueError(f"planned failure for key {dict(key)}")
    rng = np.random.default_rng(seed)
    draws = rng.standard_normal((reps, int(key["n"])))
    return {"rep": np.arange(reps), "mean": draws.mean(axis=1), "var": draws.var(axis=1, ddof=1)}
