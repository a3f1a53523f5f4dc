"""Calendar helpers: decimal years to quarters, half-years and days since 1970-01-01."""

from __future__ import annotations

import datetime as _dt
import math

import numpy as np

EPOCH = _dt.date(1970, 1, 1)
EPS = 1e-6


def quarter_index(t) -> np.ndarray:
    """``4 x year + quarter - 1`` of decimal years ``t``."""
    return np.floor(4.0 * np.asarray(t, dtype=float) + EPS).astype(np.int64)


def qlabel(qi: int) -> str:
    return f"{qi // 4}Q{qi % 4 + 1}"


def hlabel(hi: int) -> str:
    return f"{hi // 2}H{hi % 2 + 1}"


def days(t: float) -> int:
    """Days since 1970-01-01 of the decimal year ``t``."""
    y = math.floor(t + 1e-9)
    d0 = _dt.date(y, 1, 1)
    n = (_dt.date(y + 1, 1, 1) - d0).days
    return (d0 - EPOCH).days + int(math.floor((t - y) * n + 1e-6))


def quarter_start_days(qi: int) -> int:
    return (_dt.date(qi // 4, 3 * (qi % 4) + 1, 1) - EPOCH).days


def quarter_end_days(qi: int) -> int:
    return quarter_start_days(qi + 1) - 1


def half_start_days(hi: int) -> int:
    return quarter_start_days(2 * hi)
