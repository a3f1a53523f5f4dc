"""Reports of the LP-exit game (docs/model.md 2): scenario files, summaries, figures, CSV frames.

* :func:`resolve_scenario` — a bare name (``"calm"``) is a file shipped in
  ``mfg/lp_exit/library/`` (package data); anything else is a path.
  :func:`shipped_scenarios` lists the shipped files with their one-line descriptions.
* :func:`summary` / :func:`summary_text` — the figures a user holds against docs/model.md 2.10:
  discount range, annual sales, second-half share of sales, the lowest price, iterations,
  residual, exploitability, timings.  Works for a plain :func:`mfg.lp_exit.solve` result
  and for a :class:`mfg.lp_exit.scenarios.ScenarioResult`.
* :func:`amplification_summary` / :func:`amplification_text` — the equilibrium against the
  baselines of docs/model.md 2.7 after a shock (:mod:`mfg.lp_exit.baselines`: DCF, first round,
  myopic) and the amplification multiplier (equilibrium / first-round trough discount).
* :func:`lp_exit_figure`, :func:`amplification_figure` — matplotlib figures (Agg).
* :func:`write_outputs` — ``market.csv``, ``populations.csv`` and the figure, atomically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mfg.lp_exit.params import SCENARIO_DIR, ScenarioNotFound, resolve_scenario, scenario_description, shipped_scenarios  # noqa: F401

from .io import save_figure, write_csv, write_text

__all__ = [
    "SCENARIO_DIR",
    "LPExitOutputs",
    "ScenarioNotFound",
    "amplification_figure",
    "amplification_summary",
    "amplification_text",
    "lp_exit_figure",
    "resolve_scenario",
    "run",
    "scenario_description",
    "shipped_scenarios",
    "summary",
    "summary_text",
    "write_outputs",
]

# ----------------------------------------------------------------------------------
# summaries
# ----------------------------------------------------------------------------------


def _is_scenario(result) -> bool:
    return hasattr(result, "segments")


def _last_residual(result) -> float:
    if _is_scenario(result):
        return float(max(s.residuals[-1] for s in result.segments))
    return float(result.residuals[-1])


def _step_volume(result) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Times, NAV sold and active NAV of the steps ``0..N-1`` (no sale happens at ``t_N``)."""
    dt = float(result.t[1] - result.t[0])
    t = np.asarray(result.t[:-1], dtype=float)
    return t, np.asarray(result.sell_flow[:-1], dtype=float) * dt, np.asarray(result.active_nav[:-1], dtype=float)


def annual_volume(result, window: tuple[float, float] | None = None) -> pd.DataFrame:
    """Sales per calendar year: ``year, steps, full`` (the year lies inside the window: the
    solve's, or ``window``, e.g. a scenario's ``report_window``),
    ``volume`` (NAV sold, fraction of the market's NAV), ``pct_active`` (sum over the
    year's steps of the sell flow per unit of active NAV times ``dt``, in %),
    ``second_half`` (share of the year's volume sold from 1 July on)."""
    t, vol, nav = _step_volume(result)
    dt = float(result.t[1] - result.t[0])
    eps = 1e-9 * dt
    year = np.floor(t + eps).astype(int)
    frac = t + eps - year
    with np.errstate(invalid="ignore", divide="ignore"):
        turn = np.where(nav > 0.0, vol / nav, np.nan)  # fraction of active NAV sold in the step
    t0, t_end = (float(result.t[0]), float(result.t[-1])) if window is None else window
    rows = []
    for y in np.unique(year):
        sel = year == y
        v = float(vol[sel].sum())
        h2 = float(vol[sel & (frac >= 0.5 - eps)].sum())
        rows.append({"year": int(y), "steps": int(sel.sum()), "full": bool(y >= t0 - eps and y + 1 <= t_end + eps),
                     "volume": v, "pct_active": 100.0 * float(np.nansum(turn[sel])),
                     "second_half": h2 / v if v > 0.0 else math.nan})
    return pd.DataFrame(rows)


def summary(result, window: tuple[float, float] | None = None) -> dict:
    """Key figures of a solve (:class:`~mfg.lp_exit.LPExitResult`) or a scenario
    (:class:`~mfg.lp_exit.scenarios.ScenarioResult`), over ``window`` (default: the solve's;
    pass a scenario's ``report_window`` to leave its burn-in and burn-out out).

    Prices and discounts are the market price factor ``P`` (fraction of NAV): discount
    ``1 - P`` in % of NAV over all steps.  Volumes: NAV sold per calendar year per unit
    of active NAV, in % (``pct_active`` of :func:`annual_volume`); ``turnover_mean_pct``
    is the mean over the steps of the sell flow per unit of active NAV (% a year);
    ``second_half_share``: share of the volume of whole calendar years sold in their
    second halves.  ``iterations``, ``exploitability``: an int / float for a solve, a
    tuple per segment for a scenario.
    """
    t = np.asarray(result.t, dtype=float)
    price = np.asarray(result.price, dtype=float)
    inside = np.ones(t.size, dtype=bool) if window is None else (t >= window[0] - 1e-9) & (t < window[1] - 1e-9)
    t, price = t[inside], price[inside]
    disc = 100.0 * (1.0 - price)
    years = annual_volume(result, window)
    full = years[years["full"]]
    tot = float(full["volume"].sum())
    h2 = float((full["volume"] * full["second_half"].fillna(0.0)).sum())
    i_min = int(np.argmin(price))
    out = {
        "kind": getattr(result, "kind", "solve"),
        "populations": len(result.populations),
        "grid": f"{result.L.size} x {t.size}",
        "window": (float(t[0]), float(t[-1])) if window is None else tuple(window),
        "events": tuple(e.label for e in getattr(result, "events", ())),
        "iterations": result.iterations,
        "converged": bool(result.converged),
        "last_residual": _last_residual(result),
        "exploitability": result.exploitability,
        "discount_min_pct": float(disc.min()),
        "discount_mean_pct": float(disc.mean()),
        "discount_max_pct": float(disc.max()),
        "annual_volume_pct": {int(r.year): float(r.pct_active) for r in full.itertuples()},
        "annual_volume_mean_pct": 100.0 * float(np.nanmean(np.asarray(result.turnover, dtype=float)[inside][
            : None if window is not None else -1])),
        "second_half_share": h2 / tot if tot > 0.0 else math.nan,
        "min_price": float(price[i_min]),
        "min_price_time": float(t[i_min]),
        "seconds": float(result.timings.get("total", math.nan)),
    }
    if not _is_scenario(result):
        out["seconds_per_phase"] = {k: float(v) for k, v in result.timings.items() if k != "total"}
    return out


def _fmt_it(v) -> str:
    if isinstance(v, tuple):
        return " + ".join(str(x) for x in v) + " (per segment)"
    return str(v)


def _fmt_expl(v) -> str:
    if isinstance(v, tuple):
        return ", ".join(f"{x:.2g}" for x in v) + " (per segment)"
    return f"{v:.2g}"


def summary_text(s: dict, title: str | None = None) -> str:
    """Lines of text for a :func:`summary`."""
    lines = [] if title is None else [title]
    ev = f", events: {', '.join(s['events'])}" if s["events"] else ""
    lines.append(f"  {s['populations']} populations on {s['grid']} (L x t) over "
                 f"{s['window'][0]:g}-{s['window'][1]:g}{ev}")
    expl = ("" if s["kind"] == "baseline"  # the baseline's decisions are not an equilibrium of the real market
            else f"exploitability {_fmt_expl(s['exploitability'])} NAV, ")
    lines.append(f"  fixed point: {_fmt_it(s['iterations'])} iterations, "
                 f"{'converged' if s['converged'] else 'NOT converged'}, last residual {s['last_residual']:.2g}, "
                 f"{expl}{s['seconds']:.2f} s")
    lines.append(f"  discount (% of NAV): min {s['discount_min_pct']:.1f}, mean {s['discount_mean_pct']:.1f}, "
                 f"max {s['discount_max_pct']:.1f}")
    lines.append(f"  lowest price {s['min_price']:.4f} of NAV at t = {s['min_price_time']:.3f}")
    years = s["annual_volume_pct"]
    if years:
        lines.append("  sales (% of active NAV a year): mean " f"{s['annual_volume_mean_pct']:.2f}; by year "
                     + ", ".join(f"{y}: {v:.2f}" for y, v in years.items()))
        lines.append(f"  second-half share of annual sales: {100 * s['second_half_share']:.0f}%")
    else:
        lines.append(f"  sales (% of active NAV a year): mean {s['annual_volume_mean_pct']:.2f}")
    return "\n".join(lines)


def amplification_summary(eq, paths: dict, horizon: float = 3.0) -> dict:
    """The shock's trough discount on every path (``1 - P/P_calm``: against the no-event equilibrium at the same
    date, largest over ``horizon`` years after the first event; :func:`mfg.lp_exit.baselines.trough`), the NAV
    sold in the year after it, and the multiplier ``trough(equilibrium) / trough(first round)`` (docs/model.md
    2.7; NaN without a first round, e.g. on the impact market)."""
    from mfg.lp_exit.baselines import trough

    shock = float(min(e.time for e in eq.events))
    rows = {}
    for kind, p in paths.items():
        d, t_d = trough(p, shock, horizon)
        sel = (p.t >= shock - 1e-9) & (p.t < shock + 1.0 - 1e-9)
        rows[kind] = {"trough": d, "time_to_trough": t_d - shock, "nav_sold_year_after":
                      float(np.nansum(np.asarray(p.sell_flow)[sel]) * p.dt)}
    fr, eqv = rows.get("first_round", {}).get("trough", math.nan), rows.get("equilibrium", {}).get("trough", math.nan)
    return {"shock_time": shock, "paths": rows, "multiplier": eqv / fr if fr and fr > 0 else math.nan}


def amplification_text(amp: dict) -> str:
    """Lines of text for an :func:`amplification_summary`."""
    lines = [f"Amplification of the shock at {amp['shock_time']:g} against the baselines of docs/model.md 2.7 "
             "(trough discount 1 - P/P_calm against the no-event equilibrium)"]
    for kind, r in amp["paths"].items():
        sold = f"NAV sold in the year after: {100 * r['nav_sold_year_after']:.2f}% of market NAV"
        if r["trough"] < 5e-5:  # no discount against the no-event path: a trough date would mean nothing
            lines.append(f"  {kind:<12} no discount against the no-event path; {sold}")
        else:
            lines.append(f"  {kind:<12} trough {100 * r['trough']:.1f}% ({12 * r['time_to_trough']:.1f} months after "
                         f"the shock); {sold}")
    m = amp["multiplier"]
    verdict = ("" if not math.isfinite(m) else
               " (> 1: anticipation amplifies the shock)" if m > 1 else " (< 1: anticipation dampens the shock)")
    lines.append(f"  amplification multiplier, equilibrium / first round: {m:.3f}{verdict}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mark_events(ax, result, label=True):
    done = set()
    for e in getattr(result, "events", ()):
        if e.time in done:
            continue
        done.add(e.time)
        ax.axvline(e.time, color="crimson", lw=1.0, ls=":", zorder=0,
                   label="shock" if label and len(done) == 1 else None)


def _heatmap_populations(result, count: int) -> list[int]:
    """``count`` populations to show: the one that sold the most NAV, then the top sellers of
    other LP types, then the rest by NAV sold."""
    w = result.model.weights
    sold = np.asarray(result.exited_mass[:, -1]) * w
    order = sorted(range(len(result.populations)), key=lambda k: (-sold[k], -w[k]))
    types = [p.lp_type for p in result.model.populations]
    picked: list[int] = []
    for k in order:  # one per LP type first
        if len(picked) < count and types[k] not in {types[j] for j in picked}:
            picked.append(k)
    for k in order:
        if len(picked) < count and k not in picked:
            picked.append(k)
    return picked


#: Above this many populations the flow and threshold panels group the populations by LP type.
GROUP_BY_TYPE = 8


def _groups(result) -> tuple[list[str], list[list[int]]]:
    """Labels and population indices of the series the flow and threshold panels draw: one per population,
    or one per LP type when there are more than :data:`GROUP_BY_TYPE` populations (a vintage ladder)."""
    names = list(result.populations)
    if len(names) <= GROUP_BY_TYPE:
        return names, [[k] for k in range(len(names))]
    types = [p.lp_type for p in result.model.populations]
    labels = list(dict.fromkeys(types))
    return labels, [[k for k, x in enumerate(types) if x == lab] for lab in labels]


def _shade_outside(ax, t, window) -> None:
    """Grey out the burn-in and burn-out outside the report window (not facts: docs/lp_exit.md)."""
    if window is None:
        return
    lo, hi = window
    kw = dict(color="0.85", alpha=0.5, lw=0, zorder=0)
    if lo > t[0]:
        ax.axvspan(t[0], lo, **kw)
    if hi < t[-1]:
        ax.axvspan(hi, t[-1], **kw)


def _price_panel(ax, result, baseline) -> None:
    t = np.asarray(result.t)
    many = len(result.populations) > GROUP_BY_TYPE
    for k in range(len(result.populations)):
        pi = np.where(result.active_mass[k] > 0, result.vintage_price[k], np.nan)
        ax.plot(t, 100 * pi, color="0.6" if many else f"C{k % 10}", lw=0.6 if many else 0.8, alpha=0.5)
    ax.plot(t, 100 * result.price, "k-", lw=1.8, label="market price P")
    inputs = getattr(result, "inputs", None)
    pbar = getattr(inputs, "pbar", None)
    if pbar is not None:
        ax.plot(t, 100 * np.asarray(pbar), color="0.35", ls="--", lw=1.0, label="calm price P̄")
    if baseline is not None:
        ax.plot(t, 100 * baseline.price, color="darkorange", lw=1.4, ls="-.", label="baseline P")
    ax.plot([], [], color="0.6" if many else "0.4", lw=0.8, alpha=0.6,
            label="vintage prices π_k" + ("" if many else " (colours as below)"))
    _mark_events(ax, result)
    ax.set(title="Secondary price", ylabel="% of NAV", xlabel="year")
    lo = 100 * min(np.nanmin(np.where(result.active_mass > 0, result.vintage_price, np.nan)), result.price.min(),
                   np.inf if baseline is None else np.min(baseline.price))
    ax.set_ylim(max(0.0, lo - 3), 100 * max(result.price.max(), np.max(pbar if pbar is not None else [0])) + 3)
    ax.legend(fontsize=7.5, loc="lower left")


def _capital_panel(ax, result) -> None:
    """Buyer capital against its target, and on the right axis the volume and withdrawn supply (clearing
    market) or the sell pressure (impact market)."""
    t = np.asarray(result.t)
    ax.plot(t, 100 * result.buyer_capital, "C0-", lw=1.5, label="buyer capital K")
    Kbar = getattr(getattr(result, "inputs", None), "Kbar", None)
    if Kbar is not None:
        ax.plot(t, 100 * np.asarray(Kbar), "C0--", lw=1.0, label="target capital K̄")
    ax.set_ylim(bottom=0)
    ax2 = ax.twinx()
    if np.isfinite(np.asarray(result.sell_pressure, dtype=float)).any():
        ax.set_title("Buyer capital and sell pressure")
        ax2.plot(t, 100 * result.sell_pressure, "C3-", lw=1.2, label="sell pressure Ŝ")
        ax2.set_ylabel("Ŝ, % of market NAV / yr", color="C3")
    else:
        ax.set_title("Buyer capital, volume and withdrawn supply")
        ax2.plot(t[:-1], 100 * result.sell_flow[:-1], "C3-", lw=1.0, label="volume S(P)")
        ax2.plot(t[:-1], 100 * np.asarray(result.withdrawn)[:-1], "C1-", lw=1.0, label="withdrawn S(P̄) − S(P)")
        ax2.set_ylabel("% of market NAV / yr", color="C3")
    ax2.set_ylim(bottom=0)
    ax.set(ylabel="K, % of market NAV", xlabel="year")
    _mark_events(ax, result, label=False)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7.5, loc="best")


def _flow_panel(ax, result) -> None:
    t = np.asarray(result.t)
    labels, groups = _groups(result)
    flow = 100 * np.asarray(result.flow)
    stacks = [flow[g, :-1].sum(axis=0) for g in groups]
    ax.stackplot(t[:-1], stacks, colors=[f"C{j % 10}" for j in range(len(labels))], labels=labels, alpha=0.85)
    _mark_events(ax, result, label=False)
    by = "LP type" if len(labels) < len(result.populations) else "population"
    ax.set(title=f"Sell flow by {by} (stacked)", ylabel="% of market NAV / yr", xlabel="year")
    ax.legend(fontsize=7, ncol=2 if len(labels) > 3 else 1, loc="upper right")


def _threshold_panel(ax, result) -> None:
    t = np.asarray(result.t)
    labels, groups = _groups(result)
    for j, (lab, g) in enumerate(zip(labels, groups)):
        sells = any(np.isfinite(result.threshold[k]).any() for k in g)
        for i, k in enumerate(g):
            ax.plot(t, result.threshold[k], color=f"C{j % 10}", lw=1.0 if len(g) == 1 else 0.7,
                    label=(lab if sells else f"{lab} (never sells)") if i == 0 else None)
    _mark_events(ax, result, label=False)
    ax.set(title="Exit thresholds ℓ*(t): sell when L is below", ylabel="liquidity L", xlabel="year")
    ax.legend(fontsize=7, ncol=2 if len(labels) > 3 else 1, loc="best")


def _density_panel(fig, ax, result, k: int) -> None:
    from matplotlib.colors import LogNorm

    t, L = np.asarray(result.t), np.asarray(result.L)
    d = np.asarray(result.density[k])  # (n_t, n_L)
    mass = d.sum(axis=0)
    if mass.sum() > 0:
        cdf = np.cumsum(mass) / mass.sum()
        lo = L[max(0, np.searchsorted(cdf, 1e-4) - 2)]
        hi = L[min(L.size - 1, np.searchsorted(cdf, 1 - 1e-4) + 2)]
    else:
        lo, hi = L[0], L[-1]
    th = np.asarray(result.threshold[k])
    if np.isfinite(th).any():  # show where the exits happen too
        lo = min(lo, float(np.nanpercentile(th, 10)) - 0.1)
    act = result.active_mass[k] > 0
    img = np.ma.masked_where(~np.broadcast_to(act[:, None], d.shape) | (d <= 0), d)
    dmax = float(d.max()) if d.max() > 0 else 1.0
    im = ax.imshow(img.T, origin="lower", aspect="auto", cmap="viridis", norm=LogNorm(dmax * 1e-3, dmax),
                   extent=(t[0], t[-1], L[0] - 0.5 * (L[1] - L[0]), L[-1] + 0.5 * (L[1] - L[0])),
                   interpolation="nearest")
    ax.plot(t, th, color="w", lw=1.2, ls="--", label="exit threshold")
    _mark_events(ax, result, label=False)
    ax.set_ylim(lo, hi)
    ax.set(title=f"Density of active LPs: {result.populations[k]}", xlabel="year", ylabel="liquidity L")
    ax.legend(fontsize=7, loc="upper right")
    fig.colorbar(im, ax=ax, pad=0.01, label="density (log scale)", extend="min")


def lp_exit_figure(result, *, baseline=None, heatmaps: int | tuple[str, ...] = 2, title: str | None = None,
                   window: tuple[float, float] | None = None):
    """Six panels: market and vintage prices; buyer capital with the volume and withdrawn supply (or the sell
    pressure of the impact market); sell flow by population (by LP type for a vintage ladder); exit
    thresholds; density of active LPs in ``(t, L)`` for two populations (those that sold the most, or
    the names in ``heatmaps``) with their exit thresholds.

    ``result``: a solve or a scenario (shock times marked); ``baseline``: an optional path whose
    price is drawn beside the equilibrium's; ``window``: the report window (outside it is greyed:
    burn-in and burn-out are not facts).
    """
    plt = _plt()
    t = np.asarray(result.t)
    names = list(result.populations)
    heat = _heatmap_populations(result, heatmaps) if isinstance(heatmaps, int) else [names.index(n) for n in heatmaps]
    fig = plt.figure(figsize=(13, 10), layout="constrained")
    gs = fig.add_gridspec(3, 2, height_ratios=(1, 1, 1.1))
    axes = [fig.add_subplot(gs[i, j]) for i in range(2) for j in range(2)]
    _price_panel(axes[0], result, baseline)
    _capital_panel(axes[1], result)
    _flow_panel(axes[2], result)
    _threshold_panel(axes[3], result)
    sub = gs[2, :].subgridspec(1, max(1, len(heat)))
    for j, k in enumerate(heat):
        ax = fig.add_subplot(sub[0, j])
        _density_panel(fig, ax, result, k)
        axes.append(ax)
    for j, ax in enumerate(axes):
        ax.set_xlim(t[0], t[-1])
        if j < 4:
            _shade_outside(ax, t, window)
        elif window is not None:  # a shade would hide the density: mark the window's ends instead
            for x in window:
                if t[0] < x < t[-1]:
                    ax.axvline(x, color="0.3", lw=0.8, ls=":")
        ax.grid(alpha=0.3)
    if window is not None and (window[0] > t[0] or window[1] < t[-1]):
        axes[0].plot([], [], color="0.85", lw=6, alpha=0.8, label="outside the report window")
        axes[0].legend(fontsize=7.5, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=13)
    return fig


_PATH_STYLE = {"dcf": ("k", "--"), "first_round": ("tab:orange", "-"), "myopic": ("tab:green", "-"),
               "equilibrium": ("tab:blue", "-")}


def amplification_figure(eq, paths: dict, amp: dict | None = None, title: str | None = None):
    """The paths of docs/model.md 2.7 (:mod:`mfg.lp_exit.baselines`): price, volume, withdrawn supply, buyer capital."""
    plt = _plt()
    amp = amplification_summary(eq, paths) if amp is None else amp
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.6), layout="constrained")
    panels = (("price", "price P (fraction of NAV)", 1.0), ("sell_flow", "volume, NAV sold (% of NAV a year)", 100.0),
              ("withdrawn", "withdrawn supply (% of NAV a year)", 100.0),
              ("buyer_capital", "buyer capital K (% of market NAV)", 100.0))
    t = np.asarray(eq.t)
    for ax, (field, ylabel, scale) in zip(axes.flat, panels):
        for kind, p in paths.items():
            c, ls = _PATH_STYLE.get(kind, ("0.5", ":"))
            ax.plot(t[:-1], scale * np.asarray(getattr(p, field), dtype=float)[:-1], color=c, ls=ls, lw=1.2,
                    label=f"{kind} (trough {100 * amp['paths'][kind]['trough']:.1f}%)")
        _mark_events(ax, eq, label=False)
        ax.set(xlabel="year", ylabel=ylabel)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="lower right")
    axes[0, 0].set_title(f"amplification multiplier (equilibrium / first round) {amp['multiplier']:.2f}")
    if title:
        fig.suptitle(title, fontsize=13)
    return fig


# ----------------------------------------------------------------------------------
# outputs
# ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LPExitOutputs:
    """What :func:`run` computed and where it wrote it."""

    result: object
    baseline: object | None
    amplification: dict | None
    summary: dict
    text: str
    files: tuple[Path, ...]


def write_outputs(result, out: str | Path, *, prefix: str = "", figure: bool = True, dpi: int = 110,
                  baseline=None, title: str | None = None, window: tuple[float, float] | None = None) -> list[Path]:
    """Write ``{prefix}market.csv``, ``{prefix}populations.csv`` and ``{prefix}lp_exit.png`` to ``out`` atomically."""
    out = Path(out)
    files = [write_csv(out / f"{prefix}market.csv", result.to_frame("market")),
             write_csv(out / f"{prefix}populations.csv", result.to_frame("populations"))]
    if figure:
        plt = _plt()
        fig = lp_exit_figure(result, baseline=baseline, title=title, window=window)
        files.append(save_figure(out / f"{prefix}lp_exit.png", fig, dpi=dpi))
        plt.close(fig)
    return files


def _amplification_frame(amp: dict) -> pd.DataFrame:
    return pd.DataFrame([{"path": k, "shock_time": amp["shock_time"], **v, "multiplier": amp["multiplier"]}
                         for k, v in amp["paths"].items()])


def _baselines(sc, result, method: str) -> dict:
    """The paths of docs/model.md 2.7 on the scenario's shock (the impact market: the DCF only)."""
    from mfg.lp_exit.baselines import BASELINES, baseline_paths

    kinds = BASELINES if sc.model.market.kind == "clearing" and sc.solver.temperature > 0 else ("dcf", "equilibrium")
    return baseline_paths(sc.model, sc.grid, sc.solver, sc.events, method, calm=result.segments[0], kinds=kinds)


def run(scenario, out: str | Path, *, method: str = "sl", baseline: bool = True, name: str = "scenario",
        figures: bool = True, dpi: int = 110) -> LPExitOutputs:
    """Solve a :class:`~mfg.lp_exit.params.Scenario` (with its events: :func:`~mfg.lp_exit.scenarios.solve_scenario`,
    and with ``baseline`` the baselines of docs/model.md 2.7 too), write the frames and figures, and
    return the summary.

    Files: ``market.csv``, ``populations.csv``, ``lp_exit.png``, ``summary.txt``; with
    events and ``baseline``: ``baseline_market.csv`` (every path, column ``path``),
    ``amplification.csv``, ``amplification.png``.
    """
    from mfg.lp_exit import solve
    from mfg.lp_exit.scenarios import solve_scenario

    out = Path(out)
    sc = scenario
    if sc.events:
        result = solve_scenario(sc.model, sc.grid, sc.solver, sc.events, method=method)
    else:
        result = solve(sc.model, sc.grid, sc.solver, method)
    paths = amp = None
    if sc.events and baseline:
        paths = _baselines(sc, result, method)
        amp = amplification_summary(result, paths)
    s = summary(result, sc.report_window)
    text = summary_text(s, f"LP-exit equilibrium: {name} (method {method})")
    if amp is not None:
        text += "\n" + amplification_text(amp)
    files = write_outputs(result, out, figure=figures, dpi=dpi, title=f"LP exit: {name}", window=sc.report_window)
    if paths is not None:
        frame = pd.concat([p.to_frame("market").assign(path=k) for k, p in paths.items()], ignore_index=True)
        files.append(write_csv(out / "baseline_market.csv", frame))
        files.append(write_csv(out / "amplification.csv", _amplification_frame(amp)))
        if figures:
            plt = _plt()
            fig = amplification_figure(result, paths, amp, title=f"{name}: the paths of docs/model.md 2.7")
            files.append(save_figure(out / "amplification.png", fig, dpi=dpi))
            plt.close(fig)
    files.append(write_text(out / "summary.txt", text + "\n"))
    return LPExitOutputs(result=result, baseline=paths, amplification=amp, summary=s, text=text, files=tuple(files))
