"""The convergence study's report (experiments/convergence.py): the summary in markdown, the figures
(RMSE against N; the epsilon-Nash bounds against N) and the files written into the study folder."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np

__all__ = ["summary_markdown", "convergence_figure", "epsilon_figure", "write_outputs", "epsilon_verdict"]


def _fmt_ci(v, lo, hi, fmt=".3f") -> str:
    if not np.isfinite(v):
        return "-"
    return f"{v:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def _rate_sentence(row) -> str:
    s, lo, hi = row["slope"], row["slope_lo"], row["slope_hi"]
    if not np.isfinite(s):
        return "too few sizes"
    parts = []
    ts, tlo, thi = (row.get(c, math.nan) for c in ("tail_slope", "tail_slope_lo", "tail_slope_hi"))
    if lo <= -0.5 <= hi:
        parts.append("RMSE ~ N^-1/2")
    elif np.isfinite(ts) and tlo <= -0.5 <= thi:
        parts.append(f"RMSE ~ N^-1/2 over the tail; {s:.2f} over the slope range (pre-asymptotic small N)")
    else:
        parts.append(f"RMSE slope {s:.2f} (interval excludes -1/2)")
    if np.isfinite(row.get("n_cross", math.nan)) and row["floor_lo"] > 0:
        parts.append(f"floor b resolved (dominates from N ~ {row['n_cross']:.1e})")
    if row["signed"]:
        if np.isfinite(row["bias_slope"]):
            bl, bh = row["bias_slope_lo"], row["bias_slope_hi"]
            if bh - bl > 0.8:
                tag = f"bias exponent not identified ({row['bias_slope']:.2f} [{bl:.2f}, {bh:.2f}])"
            elif bl <= -1 <= bh:
                tag = "bias ~ 1/N"
            elif bl <= 0 <= bh or bh > -0.05:
                tag = "bias constant in N (the floor)"
            else:
                tag = f"bias exponent {row['bias_slope']:.2f}"
            parts.append(f"{tag} (bias resolved at {row['bias_points']} sizes)")
        else:
            parts.append(f"bias resolved at {row['bias_points']} size(s), too few in the fit range for a rate")
    return "; ".join(parts)


def epsilon_verdict(rates, table) -> str:
    """One plain sentence per model: do the data support ``eps_N - eps_inf = O(N^-1/2)``?

    The upper bound decides (no deviation gains more on a path): supported when the exponent of
    its excess over the MFG's exploitability, fitted over the thick-market sizes (``range =
    "thick"``, else every size), has an interval at or below -1/2 (it decays at least that fast)."""
    out = []
    for model, sub in rates.groupby("model", sort=False):
        rng = "thick" if (sub["range"] == "thick").any() else "all"
        sub = sub[sub["range"] == rng]
        up = sub[sub["bound"] == "upper"].iloc[0]
        lo_row = sub[sub["bound"] == "lower"].iloc[0]
        e_inf = float(table[table["model"] == model]["mfg_exploitability"].iloc[0])
        s, slo, shi = up["exponent"], up["exponent_lo"], up["exponent_hi"]
        where = f"N = {up['n_min']:.0e}..{up['n_max']:.0e}"
        if np.isfinite(s) and shi <= -0.5:
            verdict = (f"yes: over {where} the upper bound's excess over eps_inf = {e_inf:.2e} falls like "
                       f"N^{s:.2f} [{slo:.2f}, {shi:.2f}], at least as fast as N^-1/2")
        elif np.isfinite(s) and slo <= -0.5:
            verdict = (f"consistent: over {where} the upper bound's excess falls like N^{s:.2f} [{slo:.2f}, "
                       f"{shi:.2f}], an interval that contains -1/2")
        elif np.isfinite(s):
            verdict = (f"no: over {where} the upper bound's excess falls like N^{s:.2f} [{slo:.2f}, {shi:.2f}], "
                       "slower than N^-1/2")
        else:
            verdict = (f"not decided: over {where} the upper bound's excess is resolved at {int(up['resolved'])} "
                       "size(s) (three are needed for a rate)")
        low = (f"N^{lo_row['exponent']:.2f} [{lo_row['exponent_lo']:.2f}, {lo_row['exponent_hi']:.2f}]"
               if np.isfinite(lo_row["exponent"]) else f"resolved at {int(lo_row['resolved'])} size(s)")
        out.append(f"**{model}: do the data support eps_N - eps_inf = O(N^-1/2)?** {verdict}; the lower bound's "
                   f"excess: {low}.")
    return "\n".join(out)


def _epsilon_lines(result) -> list[str]:
    eps = result.epsilon
    if not len(eps):
        return []
    lines = ["", "Epsilon-Nash bounds of the MFG policy (docs/model.md 2.9b): gain of one tagged LP's best "
             "clairvoyant deviation (upper) and of a regression deviation that reads only its liquidity and the "
             "public past (lower, fitted on half the replications, evaluated on the other half), NAV-weighted, "
             "integrated over the initial laws; eps_inf: the MFG's own exploitability:", "",
             "| model | N | replications (eval) | lower [95%] | upper [95%] | open-loop BR [95%] | eps_inf "
             "| lower - eps_inf | upper - eps_inf |", "|---|---|---|---|---|---|---|---|---|"]
    for _, r in eps.iterrows():
        lines.append(f"| {r['model']} | {r['N']:.0e} | {r['replications']} ({r['replications_eval']}) "
                     f"| {_fmt_ci(r['lower'], r['lower_lo'], r['lower_hi'], '.3e')} "
                     f"| {_fmt_ci(r['upper'], r['upper_lo'], r['upper_hi'], '.3e')} "
                     f"| {_fmt_ci(r['open_loop'], r['open_loop_lo'], r['open_loop_hi'], '.3e')} "
                     f"| {r['mfg_exploitability']:.3e} | {r['lower_excess']:+.2e} | {r['upper_excess']:+.2e} |")
    rates = result.epsilon_rates
    if len(rates):
        lines += ["", "Rates of the excess over eps_inf, `bound - eps_inf = a N^s` (weighted fit, bootstrap interval; "
                  "thick: the sizes of the tail range, where a step clears more than one stake):", "",
                  "| model | bound | sizes | exponent s [95%] | amplitude a | sizes resolving the excess |",
                  "|---|---|---|---|---|---|"]
        for _, r in rates.iterrows():
            rate = _fmt_ci(r["exponent"], r["exponent_lo"], r["exponent_hi"], ".2f")
            lines.append(f"| {r['model']} | {r['bound']} | {r['range']}: {r['n_min']:.0e}..{r['n_max']:.0e} | {rate} "
                         f"| {r['amplitude']:.3g} | {int(r['resolved'])} |")
        lines += ["", epsilon_verdict(rates, eps)]
    return lines


def _market_lines(result) -> list[str]:
    mk = result.markets
    if not len(mk):
        return []
    shock = "worst_shock_gap" in mk.columns
    lines = ["", "Thickness of the LP markets (over the statistics window): stakes sold per step (below 1 a step "
             "clears less than one stake: the thin-market regime) and the share of steps priced at the cap"
             + ("; with a shock, the worst replication's mean price gap to the MFG over the shock and over the "
                "recovery window (another equilibrium branch, a freeze, would show as a large negative gap)"
                if shock else "") + ":", "",
             "| model | N | stakes sold per step | steps at the price cap |" + (
                 " worst shock gap | worst recovery gap |" if shock else ""),
             "|---|---|---|---|" + ("---|---|" if shock else "")]
    for _, r in mk.iterrows():
        line = f"| {r['model']} | {r['n']:.0e} | {r['stakes_per_step']:.3g} | {r['price_at_cap']:.3f} |"
        if shock:
            tg, wg = r.get("worst_shock_gap", math.nan), r.get("worst_recovery_gap", math.nan)
            line += (f" {tg:+.3f} |" if np.isfinite(tg) else " - |") + (f" {wg:+.3f} |" if np.isfinite(wg) else " - |")
        lines.append(line)
    return lines


def _slope_lines(result) -> list[str]:
    lines = ["| model | quantity | RMSE slope [95%] | tail slope [95%] | floor b [95%] | constant C [95%] "
             "| bias exponent [95%] | rates |", "|---|---|---|---|---|---|---|---|"]
    for _, r in result.slopes.iterrows():
        bias = (_fmt_ci(r["bias_slope"], r["bias_slope_lo"], r["bias_slope_hi"], ".2f")
                if np.isfinite(r["bias_slope"]) else "-")
        lines.append(f"| {r['model']} | {r['quantity']} | {_fmt_ci(r['slope'], r['slope_lo'], r['slope_hi'])} "
                     f"| {_fmt_ci(r['tail_slope'], r['tail_slope_lo'], r['tail_slope_hi'])} "
                     f"| {_fmt_ci(r['floor'], r['floor_lo'], r['floor_hi'], '.1e')} "
                     f"| {_fmt_ci(r['constant'], r['constant_lo'], r['constant_hi'], '.3g')} | {bias} "
                     f"| {_rate_sentence(r)} |")
    return lines


def _rmse_lines(result) -> list[str]:
    lines = ["", "RMSE per N (bias in brackets where its interval excludes 0):", ""]
    conv = result.convergence
    for name in result.config.models:
        sub = conv[conv["model"] == name] if len(conv) else conv
        if not len(sub):
            continue
        qnames = list(dict.fromkeys(sub["quantity"]))
        lines.append("| " + name + " N | " + " | ".join(qnames) + " |")
        lines.append("|---" * (len(qnames) + 1) + "|")
        for n in sorted(sub["n"].unique()):
            cells = []
            for qn in qnames:
                r = sub[(sub["n"] == n) & (sub["quantity"] == qn)].iloc[0]
                c = f"{r['rmse']:.2e}"
                if r["bias_resolved"]:
                    c += f" ({r['bias']:+.1e})"
                cells.append(c)
            lines.append(f"| {n:.0e} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def summary_markdown(result) -> str:
    """The study's summary as markdown (what the CLI prints and ``summary.md`` holds)."""
    cfg = result.config
    lines = [f"# Convergence study ({cfg.label})", ""]
    fl = getattr(cfg, "floor_range", None)
    fit_n = "every N" if fl is None else f"N in [{fl[0]:.0e}, {fl[1]:.0e}]"
    thick = ""
    if getattr(cfg, "thick_stakes", None) is not None and len(result.slopes) and "tail_n_min" in result.slopes:
        firsts = result.slopes.groupby("model", sort=False)["tail_n_min"].first()
        firsts = {m: v for m, v in firsts.items() if len(result.markets) and (result.markets["model"] == m).any()}
        thick = ", ".join(f"{m} from N = {v:.0e}" for m, v in firsts.items())
    for name, info in result.info.items():
        ns = cfg.ns[name]
        reps = cfg.reps[name]
        lines.append(f"* **{name}**: " + " ".join(info))
        lines.append(f"  N = {', '.join(f'{n:.0e}' for n in ns)}; replications "
                     f"{', '.join(str(reps[n]) for n in ns)}")
    lines += ["", f"Intervals: {100 * cfg.level:g}% seeded percentile bootstrap ({cfg.n_boot} draws, replications "
              f"resampled within each N); RMSE slopes fitted over N in [{cfg.slope_range[0]:.0e}, "
              f"{cfg.slope_range[1]:.0e}], tail slopes over [{cfg.tail_range[0]:.0e}, {cfg.tail_range[1]:.0e}]; "
              f"error^2 = b^2 + C^2/N and bias = a N^s fitted over {fit_n}"
              + (f"; for the LP markets these start no lower than the first N whose steps clear at least "
                 f"{cfg.thick_stakes:g} stake(s) on average (the thick market: {thick})" if thick else "") + ".", ""]
    lines += _slope_lines(result)
    lines += _epsilon_lines(result)
    lines += _market_lines(result)
    if len(result.exploitability):
        lines += ["", "Exploitability against the N-market's mean paths (an open-loop proxy: one LP best-responding "
                  "to the mean price and mean-field paths over the replications of that N, NAV-weighted):", "",
                  "| model | N | replications | exploitability | MFG's own | excess | max_t abs(mean P^N - P) (SE) |",
                  "|---|---|---|---|---|---|---|"]
        for _, r in result.exploitability.iterrows():
            lines.append(f"| {r['model']} | {r['n']:.0e} | {r['replications']} | {r['exploitability']:.3e} "
                         f"| {r['mfg_exploitability']:.3e} | {r['excess']:.1e} "
                         f"| {r['mean_price_gap']:.2e} ({r['mean_price_gap_se']:.1e}) |")
    lines += _rmse_lines(result)
    if result.seconds:
        lines.append(f"Wall time {result.seconds:.1f} s ({result.done} tasks run, {result.skipped} already done).")
    return "\n".join(lines).rstrip() + "\n"


def _rmse_panel(ax, result, name, plt) -> None:
    sub = result.convergence[result.convergence["model"] == name]
    sl = result.slopes[result.slopes["model"] == name].set_index("quantity")
    qnames = list(dict.fromkeys(sub["quantity"]))
    cmap = plt.get_cmap("tab20" if len(qnames) > 10 else "tab10")
    lo_n, hi_n = result.config.slope_range
    for i, qn in enumerate(qnames):
        d = sub[sub["quantity"] == qn].sort_values("n")
        col = cmap(i % cmap.N)
        s = sl.loc[qn]
        label = f"{qn}: {s['slope']:.3f} [{s['slope_lo']:.3f}, {s['slope_hi']:.3f}]"
        ax.errorbar(d["n"], d["rmse"], yerr=[d["rmse"] - d["rmse_lo"], d["rmse_hi"] - d["rmse"]], fmt="o", ms=3.5,
                    color=col, capsize=2, lw=1, label=label)
        fit = d[(d["n"] >= lo_n * (1 - 1e-9)) & (d["n"] <= hi_n * (1 + 1e-9))]
        if len(fit) >= 2 and np.isfinite(s["slope"]):
            x = fit["n"].to_numpy(dtype=float)
            w = np.log(x)
            a = np.mean(np.log(fit["rmse"].to_numpy()) - s["slope"] * w)
            ax.plot(x, np.exp(a + s["slope"] * w), "-", color=col, lw=0.9, alpha=0.8)
        if np.isfinite(s["floor"]) and np.isfinite(s["constant"]):
            x = np.geomspace(d["n"].min(), d["n"].max(), 60)
            ax.plot(x, np.sqrt(s["floor"] ** 2 + s["constant"] ** 2 / x), ":", color=col, lw=0.8)
    all_n = np.array(sorted(sub["n"].unique()), dtype=float)
    top = sub.groupby("n")["rmse"].max().max()
    ax.plot(all_n, top * 1.6 * (all_n / all_n[0]) ** -0.5, "k--", lw=1.2, label="reference N^-1/2")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N (agents)")
    ax.set_ylabel("RMSE")
    ax.set_title(f"{name}: RMSE vs N (fitted slope [95%])", fontsize=10)
    ax.legend(fontsize=6 if len(qnames) > 8 else 6.5, loc="lower left")
    ax.grid(True, which="both", alpha=0.25)


def convergence_figure(result):
    """Log-log RMSE against N per model (bootstrap intervals, fitted slopes, a -1/2 reference),
    and the exploitability against the mean paths against N."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = [n for n in result.config.models if (result.convergence["model"] == n).any()] \
        if len(result.convergence) else []
    has_expl = len(result.exploitability) > 0
    n_ax = len(names) + (1 if has_expl else 0)
    n_ax = max(n_ax, 1)
    cols = n_ax if n_ax <= 3 else 2
    rows = math.ceil(n_ax / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 5.0 * rows), squeeze=False)
    axes = axes.ravel()
    for ax in axes[n_ax:]:
        ax.set_visible(False)
    for ax, name in zip(axes, names):
        _rmse_panel(ax, result, name, plt)
    if has_expl:
        ax = axes[len(names)]
        for i, (name, d) in enumerate(result.exploitability.groupby("model", sort=False)):
            col = plt.get_cmap("tab10")(i)
            ax.plot(d["n"], d["exploitability"], "o-", ms=4, color=col, label=f"{name}: against the mean paths")
            ex = d[d["excess"] > 0]
            ax.plot(ex["n"], ex["excess"], "s:", ms=3.5, color=col, label=f"{name}: excess over the MFG's own")
            ax.axhline(d["mfg_exploitability"].iloc[0], ls="--", color=col, lw=0.8, alpha=0.6,
                       label=f"{name}: MFG's own ({d['mfg_exploitability'].iloc[0]:.2e})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N (agents)")
        ax.set_ylabel("gain of a best-responding LP (NAV)")
        ax.set_title("exploitability against the mean paths (proxy)", fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.25)
    fig.tight_layout()
    return fig


def epsilon_figure(result):
    """The epsilon-Nash bounds against N (left) and their excess over the MFG's exploitability with the
    fitted rates (over the thick-market sizes) and an N^-1/2 reference (right); the thin-market sizes
    are shaded; an excess below 0 is drawn at its absolute value with an open marker, and a lower
    error bar that reaches 0 is cut at a tenth of the value."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    eps = result.epsilon
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.6))
    styles = {"upper": ("tab:red", "v", "upper: clairvoyant BR"), "lower": ("tab:blue", "^", "lower: adapted (LS)"),
              "open_loop": ("tab:gray", "s", "open-loop BR")}
    for model, d in eps.groupby("model", sort=False):
        d = d.sort_values("N")
        n = d["N"].to_numpy(dtype=float)
        e_inf = float(d["mfg_exploitability"].iloc[0])
        for col, (c, m, label) in styles.items():
            y = d[col].to_numpy(dtype=float)
            ax.errorbar(n, y, yerr=[y - d[f"{col}_lo"], d[f"{col}_hi"] - y], fmt=m + "-", ms=4, color=c, lw=1,
                        capsize=2, label=f"{model} {label}")
            if col == "open_loop":
                continue
            ex = y - e_inf
            pos = ex > 0
            bx.errorbar(n[pos], ex[pos], yerr=[np.minimum(ex[pos] * 0.9, y[pos] - d[f"{col}_lo"].to_numpy()[pos]),
                                               d[f"{col}_hi"].to_numpy()[pos] - y[pos]],
                        fmt=m, ms=5, color=c, capsize=2, lw=1, label=f"{model} {col} - eps_inf")
            bx.plot(n[~pos], -ex[~pos], m, ms=5, mfc="none", color=c)
            r = result.epsilon_rates
            if len(r):
                r = r[(r["model"] == model) & (r["bound"] == col)]
                r = r[r["range"] == ("thick" if (r["range"] == "thick").any() else "all")]
            if len(r) and np.isfinite(r["exponent"].iloc[0]) and r["amplitude"].iloc[0] > 0:
                a, s = r["amplitude"].iloc[0], r["exponent"].iloc[0]
                x = np.geomspace(r["n_min"].iloc[0], r["n_max"].iloc[0], 50)
                bx.plot(x, a * x**s, "-", color=c, lw=0.9, alpha=0.8,
                        label=f"fit N^{s:.2f} [{r['exponent_lo'].iloc[0]:.2f}, {r['exponent_hi'].iloc[0]:.2f}]")
        ax.axhline(e_inf, ls="--", color="k", lw=0.9, label=f"eps_inf = MFG exploitability ({e_inf:.2e})")
        r = result.epsilon_rates
        thick = r[(r["model"] == model) & (r["range"] == "thick")] if len(r) and "range" in r else r.iloc[0:0]
        if len(thick):  # the thin-market sizes, where the price-taking valuation overstates the gains
            edge = float(thick["n_min"].iloc[0]) / 10**0.25
            for a_ in (ax, bx):
                a_.axvspan(n.min() / 1.3, edge, color="0.85", alpha=0.5, lw=0,
                           label="thin market (< 1 stake per step)" if a_ is ax else None)
        top = np.nanmax(np.abs(d["upper"].to_numpy(dtype=float) - e_inf))
        if np.isfinite(top) and top > 0:
            bx.plot(n, top * (n / n[0]) ** -0.5, "k--", lw=1.1, label="reference N^-1/2")
    for a_, title in ((ax, "epsilon-Nash bounds of the MFG policy"),
                      (bx, "excess over the N = inf limit (open: < 0; bars cut at 0.1x)")):
        a_.set_xscale("log")
        a_.set_yscale("log")
        a_.set_xlabel("N (LPs)")
        a_.grid(True, which="both", alpha=0.25)
        a_.legend(fontsize=6.5)
        a_.set_title(title, fontsize=10)
    ax.set_ylabel("gain of the tagged LP's deviation (NAV)")
    bx.set_ylabel("bound - eps_inf (NAV)")
    fig.tight_layout()
    return fig


def write_outputs(result, out: str | Path, *, dpi: int = 110):
    """Write ``convergence.csv``, ``slopes.csv``, ``exploitability.csv``, ``markets.csv``, the epsilon-Nash
    tables (``epsilon_nash.csv``, ``epsilon_rates.csv``) and figure (``epsilon_nash.png``) when the
    study has bounds, ``summary.md`` and ``convergence.png`` into ``out`` (atomically); returns the
    result with ``files`` set."""
    import matplotlib.pyplot as plt

    from .io import save_figure, write_csv, write_text

    out = Path(out)
    files = [write_csv(out / "convergence.csv", result.convergence), write_csv(out / "slopes.csv", result.slopes),
             write_csv(out / "exploitability.csv", result.exploitability)]
    if len(result.markets):
        files.append(write_csv(out / "markets.csv", result.markets))
    if len(result.epsilon):
        files += [write_csv(out / "epsilon_nash.csv", result.epsilon),
                  write_csv(out / "epsilon_rates.csv", result.epsilon_rates)]
    files.append(write_text(out / "summary.md", result.summary or summary_markdown(result)))
    fig = convergence_figure(result)
    files.append(save_figure(out / "convergence.png", fig, dpi=dpi))
    plt.close(fig)
    if len(result.epsilon):
        fig = epsilon_figure(result)
        files.append(save_figure(out / "epsilon_nash.png", fig, dpi=dpi))
        plt.close(fig)
    return replace(result, files=tuple(files))
