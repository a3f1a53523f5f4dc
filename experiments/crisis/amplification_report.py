"""Summary and figure of the amplification experiment (:mod:`experiments.crisis.amplification`)."""

from __future__ import annotations

import math

import numpy as np

from .common import grid_text, pyplot

__all__ = ["summary", "figure"]

_COLORS = {"dcf": "k", "first_round": "tab:orange", "myopic": "tab:green", "equilibrium": "tab:blue"}
_LABELS = {"dcf": "DCF (no market)", "first_round": "first round", "myopic": "myopic price-takers",
           "equilibrium": "equilibrium"}


def _word(kappa: float) -> str:
    if not math.isfinite(kappa):
        return "undefined"
    return "convex" if kappa > 0.02 else ("concave" if kappa < -0.02 else "about linear")


def _err(m: dict, coarse: dict | None, get) -> str:
    """`` (quick grid: x, difference y)`` or ``""``."""
    if coarse is None:
        return " (quick grid: discretisation error not estimated; the full run states it)"
    a, b = get(m), get(coarse)
    return f" (quick grid {b:.2f}: discretisation error about {abs(a - b):.2f})"


def summary(m: dict, coarse: dict | None, sc, quick: bool, seconds: float) -> tuple[str, dict]:
    mult, conv, spiral = m["multiplier"], m["convexity"], m["spiral"].set_index("variant")
    calm_l, zero_l = "calm α, λ", "α = λ = 0"
    mu = mult[calm_l]
    sp = spiral.unshocked_hazard_change
    sign = "spiral (they sell more)" if sp[calm_l] > 0 else "hold-out (they sell less)"
    lines = [
        "# Amplification against the baselines of docs/model.md 2.7 (crisis_2008)", "",
        f"{grid_text(sc)}; {seconds:.1f} s. Trough discount: 1 − P/P_calm (true NAV), largest over 2008-2011.", "",
        f"**Multiplier (equilibrium / first round, channel: capital depletion and pre-emption): {mu['multiplier']:.2f}"
        + _err(m, coarse, lambda x: x["multiplier"][calm_l]["multiplier"])
        + f"; troughs {100 * mu['equilibrium']:.1f}% and {100 * mu['first_round']:.1f}%; with α = λ = 0: "
        f"{mult[zero_l]['multiplier']:.2f}.**",
        f"**Convexity in depth: {conv[calm_l]['depth']:+.2f} ({_word(conv[calm_l]['depth'])})"
        + _err(m, coarse, lambda x: x["convexity"][calm_l]["depth"])
        + f", α = λ = 0: {conv[zero_l]['depth']:+.2f}; in breadth: {conv[calm_l]['breadth']:+.2f} "
        f"({_word(conv[calm_l]['breadth'])}), α = λ = 0: {conv[zero_l]['breadth']:+.2f} (channel: mark-to-market α, "
        "herding λ).**",
        f"**Spiral sign: LPs not shocked change their exit hazard by {100 * sp[calm_l]:+.3f}% of their NAV a year in "
        f"the year after Lehman: {sign}; α only {100 * sp['α only']:+.3f}, λ only {100 * sp['λ only']:+.3f}, "
        f"α = λ = 0 {100 * sp[zero_l]:+.3f} (price and buyer capital alone).**", "",
        "| path | trough | at | lowest price | NAV sold in the year after Lehman (%) | lowest buyer capital | run |",
        "|---|---|---|---|---|---|---|"]
    for r in m["table"].itertuples():
        lines.append(f"| {r.path} | {100 * r.trough:.1f}% | {r.t_trough:.3f} | {r.lowest_price:.3f} | "
                     f"{100 * r.nav_sold_year_after:.2f} | {r.lowest_capital:+.4f} | {r.run or 'no'} |")
    lines += ["", "Depth (trough by scale of the whole shock): " + "; ".join(
        f"{v}: " + ", ".join(f"{r.depth:g} → {100 * r.trough:.1f}%" for r in g.itertuples())
        for v, g in m["depth"].groupby("variant")),
        "Breadth (trough by share of LPs hit): " + "; ".join(
        f"{v}: " + ", ".join(f"{r.breadth:g} → {100 * r.trough:.1f}%" for r in g.itertuples())
        for v, g in m["breadth"].groupby("variant")), "",
        "| channels | hazard change, LPs not shocked (%/yr) | LPs shocked (%/yr) | trough at breadth 1/2 |",
        "|---|---|---|---|"]
    for label, r in spiral.iterrows():
        lines.append(f"| {label} | {100 * r.unshocked_hazard_change:+.3f} | {100 * r.shocked_hazard_change:+.3f} | "
                     f"{100 * r.trough:.1f}% |")
    edge = max(float(m[k].edge_mass.max()) for k in ("depth", "breadth", "spiral"))
    edge_calm = max(float(m[k][m[k].variant == calm_l].edge_mass.max()) for k in ("depth", "breadth", "spiral"))
    lines += ["", f"Largest mass of a population on an end node of the liquidity grid in any solve of the sweeps: "
              f"{edge:.1e} ({'below' if edge <= 1e-6 else 'above'} the solver's warning level 1e-6). It is the lower "
              "end, L = -1.5, in the variants without herding (λ = 0), already without any shock: without the pull "
              f"towards the mean field the calm liquidity spreads wider; with the calm α, λ: {edge_calm:.1e}."]
    runs = [r.path for r in m["table"].itertuples() if r.run]
    if runs:
        lines += ["", "RUNS (price below 0.2, not findings): " + ", ".join(runs)]
    facts = {"multiplier": mu["multiplier"], "multiplier_zero": mult[zero_l]["multiplier"],
             "convexity": conv, "spiral": {k: float(v) for k, v in sp.items()}, "troughs": mu, "quick": quick,
             "seconds": seconds, "coarse_multiplier": None if coarse is None else
             coarse["multiplier"][calm_l]["multiplier"]}
    return "\n".join(lines) + "\n", facts


def figure(m: dict, sc):
    """Price, volume, withdrawn supply and buyer capital of the four paths; convexity; spiral."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5), layout="constrained")
    panels = (("price", "price (fraction of true NAV)", 1.0), ("sell_flow", "volume, NAV sold (% of NAV a year)", 100),
              ("withdrawn", "withdrawn supply (% of NAV a year)", 100),
              ("buyer_capital", "buyer capital K (% of market NAV)", 100))
    for ax, (field, ylabel, scale) in zip(axes.flat[:4], panels):
        for k, p in m["paths"].items():
            t = p.t
            sel = (t >= 2007.5) & (t <= 2011.5)
            ax.plot(t[sel], scale * np.asarray(getattr(p, field))[sel], color=_COLORS[k], lw=1.4 if k == "equilibrium"
                    else 1.0, ls="--" if k == "dcf" else "-", label=_LABELS[k])
        ax.set(xlabel="year", ylabel=ylabel)
        for e in sorted({e.time for e in sc.events}):
            ax.axvline(e, color="crimson", ls=":", lw=0.8)
    axes[0, 0].legend(fontsize=8, loc="lower left")
    ax = axes[1, 1]
    for v, g in m["depth"].groupby("variant"):
        ax.plot(g.depth, 100 * g.trough, "o-", label=f"depth, {v}")
    for v, g in m["breadth"].groupby("variant"):
        ax.plot(g.breadth, 100 * g.trough, "s--", label=f"breadth, {v}")
    ax.set(xlabel="shock depth s, or share of LPs hit b", ylabel="trough discount (%)",
           title="convexity: trough against depth and breadth")
    ax.legend(fontsize=8, loc="upper left")
    ax = axes[1, 2]
    sp = m["spiral"]
    ax.bar(np.arange(len(sp)), 100 * sp.unshocked_hazard_change, color="tab:purple")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(np.arange(len(sp)), sp.variant, fontsize=8)
    ax.set(ylabel="change in exit hazard of LPs not shocked (% of NAV a year)",
           title="spiral sign (> 0) or hold-out (< 0), year after Lehman")
    fig.suptitle("crisis_2008: the four paths of docs/model.md 2.7 (dotted red: events)")
    return fig
