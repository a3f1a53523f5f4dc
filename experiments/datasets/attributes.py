"""The LPs' attributes that the market sees (commitments, funds, strategies, fund quality) and the funds' NAV paths.

All draws come from children of the dataset's root ``SeedSequence`` that the engine never uses
(spawn keys ``2**31 + stream``), in a fixed order, one vectorised call per stream and population:
the result does not depend on threads, workers or chunking.

* strategy of a stake: drawn from its LP type's mix (:data:`~.options.STRATEGY_MIX`);
* fund: ``funds_per_strategy`` funds per (vintage, strategy), sizes Dirichlet(2); a stake's fund is
  drawn by size within its vintage and strategy;
* fund quality ``theta_f = level(strategy) x exp(quality_sd Z_f)``; the engine rescales it to NAV-weighted
  mean 1 in each population (:func:`abm.lp_market.engine.agent_weights`);
* commitment: lognormal ``exp(commitment_sd Z)``, rescaled by the engine to mean 1 in each population
  (the population's NAV is the MFG's ``w_k``); in $m, ``mean_commitment x n_lps x w_k nav_weight_i / n_k``;
* true NAV per unit of commitment of fund ``f``: ``exp(g (t - vintage) + sum of log(1 - nav_drop) over the
  shocks before t + nav_vol W_f(t))``; reported NAV: the true NAV, or the mark ``stale_nav`` quarter ends back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .calendar import EPS, quarter_end_days, quarter_index
from .options import STRATEGIES, STRATEGY_MIX, DatasetOptions

__all__ = ["Attributes", "build_attributes", "stream_rng", "STREAMS"]

#: Overlay streams: children ``(2**31 + j,)`` of the root seed (the engine uses ``(r,)``, r small).
STREAMS = dict(lp_id=0, strategy=1, fund=2, commitment=3, quality=4, nav=5, bids=6)


def stream_rng(root: np.random.SeedSequence, stream: str, *sub: int) -> np.random.Generator:
    """The generator of an overlay stream (and of its sub-stream ``sub``, e.g. a market step)."""
    key = tuple(root.spawn_key) + (2**31 + STREAMS[stream],) + tuple(int(s) for s in sub)
    ss = np.random.SeedSequence(entropy=root.entropy, spawn_key=key, pool_size=root.pool_size)
    return np.random.Generator(np.random.PCG64(ss))


@dataclass
class Attributes:
    """Per-population, per-fund and per-agent attributes (agents in the engine's storage order)."""

    vint: np.ndarray  # (n_pop,) vintage year
    types: tuple  # LP type names
    type_of: np.ndarray  # (n_pop,) index into types
    strat_names: tuple
    fund_vint: np.ndarray  # (F,) vintage of each fund
    fund_strat: np.ndarray  # (F,) strategy index of each fund
    fund_theta: np.ndarray  # (F,) quality before normalisation
    lp_id: np.ndarray  # (n,) int64
    fund: np.ndarray  # (n,) int32 fund index (fund_id = index + 1)
    nu: np.ndarray | None  # (n,) relative commitment (before the engine's normalisation), None: equal
    theta: np.ndarray | None  # (n,) quality (before normalisation), None: none

    @property
    def n_funds(self) -> int:
        return int(self.fund_vint.size)


def _cum(p) -> np.ndarray:
    c = np.cumsum(np.asarray(p, dtype=float))
    return c / c[-1]


def build_attributes(model, n_per_pop: np.ndarray, opts: DatasetOptions, root: np.random.SeedSequence) -> Attributes:
    pops = model.populations
    n = int(np.sum(n_per_pop))
    starts = np.concatenate([[0], np.cumsum(n_per_pop)]).astype(np.int64)
    vint = np.array([int(math.floor(p.vintage + 1e-9)) for p in pops], dtype=np.int64)
    types = tuple(dict.fromkeys(p.lp_type for p in pops))
    type_of = np.array([types.index(p.lp_type) for p in pops], dtype=np.int64)
    strat_names = tuple(STRATEGIES) if opts.strategies else ("buyout",)
    S, F_s = len(strat_names), opts.funds_per_strategy
    vintages = sorted(set(vint.tolist()))
    n_f = len(vintages) * S * F_s
    fund_vint = np.repeat(np.array(vintages, dtype=np.int64), S * F_s)
    fund_strat = np.tile(np.repeat(np.arange(S), F_s), len(vintages))
    rng_f = stream_rng(root, "fund")
    sizes = rng_f.dirichlet(np.full(F_s, 2.0), size=len(vintages) * S) if F_s > 1 else np.ones((len(vintages) * S, 1))
    level = np.array([STRATEGIES[s] for s in strat_names])
    rng_q = stream_rng(root, "quality")
    theta_f = level[fund_strat] * (np.exp(opts.quality_sd * rng_q.standard_normal(n_f)) if opts.quality_sd > 0
                                   else 1.0)
    rng_s = stream_rng(root, "strategy")
    fund = np.empty(n, dtype=np.int32)
    for k, p in enumerate(pops):
        lo, hi = starts[k], starts[k + 1]
        mix = STRATEGY_MIX.get(p.lp_type, STRATEGY_MIX["other"]) if opts.strategies else (1.0,)
        s = np.searchsorted(_cum(mix), rng_s.random(hi - lo), side="right").clip(0, S - 1)
        cell = vintages.index(int(vint[k])) * S + s  # (vintage, strategy) cell of each stake
        u = rng_f.random(hi - lo)
        j = np.empty(hi - lo, dtype=np.int64)
        for c in np.unique(cell):
            sel = cell == c
            j[sel] = np.searchsorted(_cum(sizes[c]), u[sel], side="right").clip(0, F_s - 1)
        fund[lo:hi] = cell * F_s + j
    nu = np.exp(opts.commitment_sd * stream_rng(root, "commitment").standard_normal(n)) if opts.commitment_sd > 0 \
        else None
    theta = theta_f[fund] if (opts.quality_sd > 0 or opts.strategies) else None
    if opts.weighted and nu is None:
        nu = np.ones(n)
    lp_id = stream_rng(root, "lp_id").permutation(n).astype(np.int64) + 1
    return Attributes(vint=vint, types=types, type_of=type_of, strat_names=strat_names, fund_vint=fund_vint,
                      fund_strat=fund_strat, fund_theta=theta_f, lp_id=lp_id, fund=fund, nu=nu, theta=theta)


def nav_paths(att: Attributes, model, weights, t: np.ndarray, dt: float, opts: DatasetOptions, events,
              root: np.random.SeedSequence, markdown: np.ndarray | None = None):
    """``(true, reported, report_day)``: NAV per unit of commitment of every fund at every step ``(F, n_t)``, and
    the day of the NAV report a buyer holds at each step (-1: the sale date, NAV not stale).  ``markdown``: the
    scenario's stale-NAV markdown ``f(t)`` (docs/model.md 2.7: true value = ``f`` x reported NAV), if it has one:
    the reported NAV is then the true NAV / ``f`` (before any ``stale_nav`` lag), and ``nav_drop`` defaults to 0."""
    pops = model.populations
    g_v = {}
    for v in sorted(set(att.fund_vint.tolist())):
        sel = [k for k in range(len(pops)) if att.vint[k] == v]
        w = np.array([weights[k] for k in sel])
        gs = np.array([pops[k].g for k in sel])
        g_v[v] = float((w * gs).sum() / w.sum()) if w.sum() > 0 else float(gs.mean())
    fund_g = np.array([g_v[v] for v in att.fund_vint.tolist()])
    fv = att.fund_vint.astype(float)
    drop_log = np.zeros(t.size)
    for te in sorted({float(e.time) for e in events}):
        d = opts.nav_drop if opts.nav_drop is not None else 0.0 if markdown is not None else \
            0.45 * max(float(e.capital_cut) for e in events if float(e.time) == te)
        drop_log[int(round((te - t[0]) / dt)):] += math.log1p(-d)
    W = np.zeros((att.n_funds, t.size))
    if opts.nav_vol > 0:
        z = stream_rng(root, "nav").standard_normal((att.n_funds, t.size - 1))
        W[:, 1:] = np.cumsum(z * math.sqrt(dt), axis=1)
    idx_true = np.exp(fund_g[:, None] * (t[None, :] - fv[:, None]) + drop_log[None, :] + opts.nav_vol * W)
    base = idx_true if markdown is None else idx_true / np.asarray(markdown, dtype=float)[None, :]
    rep_day = np.full(t.size, -1, dtype=np.int64)
    if opts.stale_nav == 0:
        return idx_true, base, rep_day
    qi = quarter_index(t)
    idx_rep = np.empty_like(idx_true)
    for m in range(t.size):
        q_mark = int(qi[m]) - opts.stale_nav  # the report of quarter q_mark, made at its end
        T_end = (q_mark + 1) / 4.0
        last = np.flatnonzero(t < T_end - EPS * dt)
        idx_rep[:, m] = np.exp(fund_g * (T_end - fv)) if last.size == 0 else base[:, last[-1]]
        rep_day[m] = quarter_end_days(q_mark)
    return idx_true, idx_rep, rep_day
