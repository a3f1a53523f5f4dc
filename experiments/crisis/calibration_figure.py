"""The figure of the calibration (:mod:`experiments.crisis.calibration`): fit, volume, hold-outs."""

from __future__ import annotations

import numpy as np

from .calibration import COVID, PRICE_SIGMA, PRICES
from .common import load, means, pyplot, window_sum

__all__ = ["figure"]


def _price_panel(ax, sc, eq, data, title, span):
    t = eq.t
    rep = 100.0 * sc.reported(t, eq.price)
    sel = (t >= span[0]) & (t <= span[1])
    ax.plot(t[sel], rep[sel], color="tab:blue", lw=1.2, label="model, % of reported NAV")
    ax.plot(t[sel], 100.0 * eq.price[sel], color="tab:blue", lw=0.8, ls="--", label="model, % of true NAV")
    ax.plot(t[sel], 100.0 * sc.markdown_at(t[sel]), color="tab:grey", lw=0.8, ls=":", label="markdown f (%)")
    for a, v in means(t, rep, span[0], span[1], 0.5):
        ax.hlines(v, a, a + 0.5, color="tab:blue", lw=3, alpha=0.5)
    if data:
        ax.errorbar([a + 0.25 for _, a, _ in data], [d for _, _, d in data], yerr=PRICE_SIGMA, fmt="ks", ms=4,
                    label="public half-year means (± σ)")
    ax.set(title=title, xlabel="year", ylabel="price, % of NAV", ylim=(0, 105))
    ax.legend(fontsize=7, loc="lower right")


def figure(fit, paths, quick: bool):
    """Four panels: the 2008 fit, the value traded and the withdrawn supply, COVID and 2022 predicted."""
    plt = pyplot()
    fig, ax = plt.subplots(2, 2, figsize=(12, 8), layout="constrained")
    sc = load("crisis_2008", quick)
    eq = fit.model["result"]
    _price_panel(ax[0, 0], sc, eq, PRICES, "2008: fitted to price and volume", (2007.0, 2012.0))
    a = ax[0, 1]
    halves = np.arange(2007.0, 2012.0, 0.5)
    traded = [window_sum(eq.t, eq.spend / eq.dt, h, h + 0.5) for h in halves]
    withdrawn = [window_sum(eq.t, eq.withdrawn, h, h + 0.5) for h in halves]
    sold = [window_sum(eq.t, eq.sell_flow, h, h + 0.5) for h in halves]
    a.bar(halves + 0.125, 100 * np.array(traded), width=0.12, label="value traded (model)")
    a.bar(halves + 0.25, 100 * np.array(sold), width=0.12, label="NAV sold (model)")
    a.bar(halves + 0.375, 100 * np.array(withdrawn), width=0.12, label="withdrawn, NAV (model)")
    a.set(title=f"2008: volume per half-year; H1 2009 / H1 2008 value traded {fit.model['volume_ratio']:.2f} "
                "(data 0.61)", xlabel="year", ylabel="% of market NAV per half-year")
    a.title.set_fontsize(9)
    a.legend(fontsize=7, loc="upper right")
    eqc, _, scc = paths["covid_2020"]
    _price_panel(ax[1, 0], scc, eqc, COVID, "COVID 2020: predicted (never fitted)", (2019.0, 2022.5))
    eq22, _, sc22 = paths["rates_2022"]
    _price_panel(ax[1, 1], sc22, eq22, (), "2022 rate shock: predicted (no public price)", (2021.0, 2025.0))
    return fig
