"""Task functions and a toy model for the recovery tests (tests/test_recovery.py).

Worker processes import them by name: pytest puts ``tests/`` on ``sys.path`` (its default
import mode), spawned workers inherit the parent's ``sys.path``, and the scripts that the
tests run in subprocesses add ``tests/`` themselves.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from experiments import convergence as cv
from experiments._demo_tasks import normal_block


def _matches(key: Mapping[str, Any], patterns: Sequence[Mapping[str, Any]]) -> bool:
    return any(all(key.get(k) == v for k, v in p.items()) for p in patterns)


def dying_block(key, seed, *, die_on: Sequence[Mapping[str, Any]] = (), once_dir: str | None = None, **kw):
    """:func:`normal_block`, except that a task whose key matches ``die_on`` ends its process with
    ``os._exit(3)``: every time, or with ``once_dir`` only the first time (a marker file per key
    in that folder, created atomically, remembers it across processes)."""
    if _matches(key, die_on):
        if once_dir is None:
            os._exit(3)
        marker = Path(once_dir) / ("died-" + "-".join(f"{k}={v}" for k, v in sorted(key.items())))
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            pass
        else:
            os._exit(3)
    return normal_block(key, seed, **kw)


def sleepy_block(key, seed, *, pid_dir: str, seconds: float = 60.0, **kw):
    """:func:`normal_block` after writing this process's PID into ``pid_dir`` and sleeping ``seconds``."""
    Path(pid_dir, f"{os.getpid()}.pid").write_text(str(os.getpid()))
    time.sleep(seconds)
    return normal_block(key, seed, **kw)


_TOY_T = np.linspace(0.0, 1.0, 5)


def toy_market(constant: float = 0.5) -> cv.FiniteNModel:
    """A market whose path is ``sin(t) + constant * Z / sqrt(N)``: a convergence study in milliseconds."""

    def run(n, reps, seed):
        z = np.random.default_rng(seed).standard_normal((reps, 1)) * np.ones((1, _TOY_T.size))
        x = np.sin(_TOY_T)[None, :] + constant * z / math.sqrt(n)
        return pd.DataFrame({"replication": np.repeat(np.arange(reps), _TOY_T.size), "t": np.tile(_TOY_T, reps),
                             "x": x.ravel()})

    ref = pd.DataFrame({"t": _TOY_T, "x": np.sin(_TOY_T)})
    return cv.FiniteNModel(name="toy", simulate=run, references={"mfg": ref},
                           quantities=(cv.Quantity("x_end", "x", "final"),))


def toy_config() -> cv.StudyConfig:
    """A three-size study of :func:`toy_market` (three tasks)."""
    ns = (100, 1000, 10000)
    return cv.StudyConfig(models={"toy": ("_sweep_tasks:toy_market", {})}, ns={"toy": ns},
                          reps={"toy": {n: 8 for n in ns}}, slope_range=(100, 10000), n_boot=50, label="toy")
