"""The dashboard's panels as PNG bytes (matplotlib's object API and the Agg canvas: no pyplot, no global
state, so they can be drawn in the worker thread while the page stays live).

Each panel shows the MFG equilibrium (solid) beside the finite-N markets (dashed: the mean over the
markets; band: their range); dotted red lines mark the shocks.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .compute import Outcome, aggregate_density, exits_by_type

__all__ = ["PANELS", "panel", "all_panels"]

#: ``(key, title)`` of the panels, in the order the page shows them.
PANELS = (
    ("price", "Price P(t) (fraction of NAV)"),
    ("volume", "Volume: sell flow (NAV/yr)"),
    ("withdrawn", "Withdrawn supply (NAV/yr)"),
    ("capital", "Buyer capital K(t) (NAV)"),
    ("density", "Liquidity density of the active LPs"),
    ("exits", "Exits by LP type (cumulative NAV sold)"),
)

_MFG = dict(color="C0", lw=1.8)
_SIM = dict(color="C1", lw=1.3, ls="--")
_SIZE = (5.6, 3.3)
_LEGEND = {"volume": "upper right", "withdrawn": "upper right", "exits": "upper left"}
_DPI = 100


def _figure() -> tuple[Figure, object]:
    fig = Figure(figsize=_SIZE, dpi=_DPI)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.15, top=0.9)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


def _mark_events(ax, eq) -> None:
    for i, tau in enumerate(sorted({float(e.time) for e in eq.events})):
        ax.axvline(tau, color="crimson", lw=1.0, ls=":", zorder=0, label="shock" if i == 0 else None)


def _series(ax, t, mfg, sim, n_agents: int, ylabel: str) -> None:
    mfg = np.asarray(mfg, dtype=float)
    sim = np.asarray(sim, dtype=float)
    if not np.isfinite(mfg).any() and not np.isfinite(sim).any():
        ax.text(0.5, 0.5, "not defined in this market\n(the impact market has no withdrawn supply)",
                transform=ax.transAxes, ha="center", va="center", color="0.4")
        ax.set_xlim(t[0], t[-1])
        return
    ax.plot(t, mfg, label="MFG equilibrium", **_MFG)
    R = sim.shape[0]
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(sim, axis=0) if np.isfinite(sim).any() else np.full(t.shape, np.nan)
    ax.plot(t, mean, label=f"finite N = {n_agents:,}" + (f" (mean of {R})" if R > 1 else ""), **_SIM)
    if R > 1 and np.isfinite(sim).any():
        ax.fill_between(t, np.nanmin(sim, axis=0), np.nanmax(sim, axis=0), color="C1", alpha=0.18, lw=0,
                        label="range of the markets")
    ax.set_ylabel(ylabel)


def panel(outcome: Outcome, key: str, density_type: str | None = None) -> bytes:
    """One panel (``key`` of :data:`PANELS`) as PNG bytes; ``density_type``: the LP type of the heat map (None: all)."""
    eq, sim = outcome.equilibrium, outcome.simulation
    t = np.asarray(eq.t, dtype=float)
    n = outcome.request.n_agents
    fig, ax = _figure()
    title = dict(PANELS)[key]
    if key == "price":
        _series(ax, t, eq.price, sim.price, n, "P")
        ax.plot(t, eq.inputs.pbar, color="0.5", lw=0.9, ls=":", label="calm price P̄")
    elif key == "volume":
        _series(ax, t, eq.sell_flow, sim.sell_flow, n, "NAV / yr")
    elif key == "withdrawn":
        _series(ax, t, eq.withdrawn, sim.withdrawn, n, "NAV / yr")
    elif key == "capital":
        _series(ax, t, eq.buyer_capital, sim.buyer_capital, n, "K")
        ax.plot(t, eq.inputs.Kbar, color="0.5", lw=0.9, ls=":", label="target K̄")
    elif key == "density":
        dens = aggregate_density(eq, density_type)
        L = np.asarray(eq.L, dtype=float)
        im = ax.imshow(dens.T, origin="lower", aspect="auto", cmap="viridis", interpolation="nearest",
                       extent=(t[0], t[-1], L[0], L[-1]))
        fig.colorbar(im, ax=ax, label="NAV-weighted density")
        ax.plot(t, eq.mean_liquidity, color="white", lw=1.2, label="mean liquidity M (MFG)")
        with np.errstate(invalid="ignore"):
            ax.plot(t, np.nanmean(sim.mean_liquidity, axis=0), color="C1", lw=1.0, ls="--",
                    label=f"M, finite N = {n:,}")
        ax.set_ylabel("liquidity L")
        # the mass lives on a small part of a wide grid: show where it is
        mass = dens.sum(axis=0)
        if mass.any():
            c = np.cumsum(mass) / mass.sum()
            lo, hi = L[np.searchsorted(c, 0.001)], L[min(np.searchsorted(c, 0.999), L.size - 1)]
            pad = 0.1 * (hi - lo) + 2 * (L[1] - L[0])
            ax.set_ylim(max(L[0], lo - pad), min(L[-1], hi + pad))
        title += "" if density_type is None else f": {density_type}"
    elif key == "exits":
        pops = eq.model.populations
        mfg = exits_by_type(pops, eq.flow, eq.dt)
        fin = exits_by_type(pops, sim.flow, eq.dt)
        for i, (typ, path) in enumerate(mfg.items()):
            ax.plot(t, 100 * path, color=f"C{i}", lw=1.8, label=f"{typ} (MFG)")
            ax.plot(t, 100 * fin[typ].mean(axis=0), color=f"C{i}", lw=1.2, ls="--", label=f"{typ} (N = {n:,})")
        ax.set_ylabel("% of market NAV")
    else:
        raise ValueError(f"unknown panel {key!r}; known: {[k for k, _ in PANELS]}")
    _mark_events(ax, eq)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("t (years)")
    ax.grid(alpha=0.25)
    ax.legend(fontsize=7, loc=_LEGEND.get(key, "lower right"), framealpha=0.8)
    return _png(fig)


def all_panels(outcome: Outcome, density_type: str | None = None) -> dict[str, bytes]:
    """``{key: PNG bytes}`` of every panel of :data:`PANELS`."""
    return {key: panel(outcome, key, density_type) for key, _ in PANELS}
