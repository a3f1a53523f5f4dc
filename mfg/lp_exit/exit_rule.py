"""Scalar numba helpers shared by the SL kernels (:mod:`mfg.lp_exit`) and the FD kernels
(:mod:`mfg.lp_exit.fd`): the logit of the exit rule and the forward sweeps' last moments.

Kept in their own module because :mod:`mfg.lp_exit` imports :mod:`mfg.lp_exit.fd`.
(numba's ``cache=True`` does not see edits here from the kernels' caches: after editing
this file delete the ``__pycache__`` folders.)
"""

from __future__ import annotations

import math

from numba import njit


@njit(cache=True, inline="always")
def _logistic(x):
    # the two branches avoid overflow of exp for large |x|
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(cache=True, inline="always")
def _last_stats(m, n_last, full, x, stats):
    """``stats[:, n_last]`` of a forward sweep: mass and first moment over ``x`` of row
    ``n_last`` of ``m`` (``m[n_last & 1]`` when two rows are kept), no exit sensitivity."""
    cur = m[n_last] if full else m[n_last & 1]
    s0 = 0.0
    s1 = 0.0
    for i in range(cur.shape[0]):
        s0 += cur[i]
        s1 += x[i] * cur[i]
    stats[0, n_last] = s0
    stats[1, n_last] = s1
    stats[2, n_last] = 0.0
