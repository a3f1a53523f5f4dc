"""Reproduce the published tables of Ashrafyan & Gomes (docs/model.md 1.4).

``reproduce_tables`` solves both tests on the four meshes and puts our relative
errors and iteration counts beside the printed ones; ``convergence_order`` measures
the order of the price error in ``rho`` with a tight tolerance;
``write_outputs`` saves CSV, markdown and a figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mfg.price_formation import PriceFormationResult, solve

from .io import save_figure, write_csv, write_text
from .price_formation_paper import MESHES, PUBLISHED, PUBLISHED_ITERATIONS, PaperTest, paper_test

__all__ = ["reproduce_tables", "convergence_order", "ReproductionReport", "run", "markdown_table"]

QUANTITIES = (("price", "price"), ("u0", "u(.,0)"), ("mT", "m(.,T)"))
#: Acceptance bands of the issue: price within 20 %, u and m within a factor 2.5.
PRICE_BAND = 0.2
FIELD_FACTOR = 2.5


def reproduce_tables(meshes=MESHES, tests=(1, 2)) -> tuple[pd.DataFrame, dict[int, PriceFormationResult]]:
    """One row per (test, mesh): our errors, the paper's, their ratio, iterations and time.

    Returns the table and the result on the finest mesh of each test (for plots).
    """
    rows = []
    finest: dict[int, PriceFormationResult] = {}
    for number in tests:
        pt = paper_test(number)
        for rho, h in meshes:
            result = solve(pt.problem, rho=rho, h=h, tol=pt.tol)
            errors = pt.errors(result)
            row = {"test": number, "rho": rho, "h": h, "nodes": f"{result.x.size}x{result.t.size}"}
            published = PUBLISHED[number].get(rho)
            for i, (key, _) in enumerate(QUANTITIES):
                row[f"{key}_ours"] = errors[key]
                row[f"{key}_paper"] = published[i] if published else np.nan
                row[f"{key}_ratio"] = errors[key] / published[i] if published else np.nan
            row["iterations_ours"] = result.iterations
            row["iterations_paper"] = PUBLISHED_ITERATIONS[number]
            row["seconds"] = result.wall_time
            rows.append(row)
            finest[number] = result
    table = pd.DataFrame(rows)
    table["within_targets"] = (
        ((table["price_ratio"] - 1).abs() <= PRICE_BAND)
        & table["u0_ratio"].between(1 / FIELD_FACTOR, FIELD_FACTOR)
        & table["mT_ratio"].between(1 / FIELD_FACTOR, FIELD_FACTOR)
        & (table["iterations_ours"] <= table["iterations_paper"])
    )
    return table, finest


def convergence_order(test: int = 1, meshes=MESHES, tol: float = 1e-10) -> pd.DataFrame:
    """Price error against ``rho`` (h = 2 rho) at a tight tolerance, with observed orders.

    ``order`` between consecutive meshes is ``log(e_coarse/e_fine)/log(rho_coarse/rho_fine)``;
    the least-squares slope of ``log e`` on ``log rho`` is in ``DataFrame.attrs['fitted_order']``.
    """
    pt = paper_test(test)
    rows = []
    for rho, h in meshes:
        result = solve(pt.problem, rho=rho, h=h, tol=tol)
        rows.append({"rho": rho, "h": h, "iterations": result.iterations, **pt.errors(result)})
    frame = pd.DataFrame(rows)
    for key, _ in QUANTITIES:
        e = frame[key].to_numpy()
        order = np.full(e.size, np.nan)
        order[1:] = np.log(e[:-1] / e[1:]) / np.log(frame["rho"].to_numpy()[:-1] / frame["rho"].to_numpy()[1:])
        frame[f"{key}_order"] = order
    slope = np.polyfit(np.log(frame["rho"]), np.log(frame["price"]), 1)[0]
    frame.attrs["fitted_order"] = float(slope)
    return frame


def markdown_table(table: pd.DataFrame) -> str:
    """The side-by-side table as markdown (our error / paper's error for each quantity)."""
    lines = []
    for number, part in table.groupby("test"):
        lines.append(f"### Test {number}\n")
        head = "| rho | h | nodes | " + " | ".join(f"{label} ours | {label} paper" for _, label in QUANTITIES)
        head += " | iterations ours / paper | seconds |"
        lines.append(head)
        lines.append("|" + "---|" * (head.count("|") - 1))
        for _, r in part.iterrows():
            cells = [f"{r['rho']:g}", f"{r['h']:g}", r["nodes"]]
            for key, _ in QUANTITIES:
                cells += [f"{r[f'{key}_ours']:.2e}", f"{r[f'{key}_paper']:.1e}"]
            cells += [f"{int(r['iterations_ours'])} / {int(r['iterations_paper'])}", f"{r['seconds']:.3f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _order_markdown(frame: pd.DataFrame) -> str:
    lines = ["| rho | h | iterations | price error | order | u(.,0) error | order | m(.,T) error | order |",
             "|---|---|---|---|---|---|---|---|---|"]
    for _, r in frame.iterrows():
        fmt = lambda v: "" if np.isnan(v) else f"{v:.2f}"  # noqa: E731
        lines.append(
            f"| {r['rho']:g} | {r['h']:g} | {int(r['iterations'])} | {r['price']:.3e} | {fmt(r['price_order'])} "
            f"| {r['u0']:.3e} | {fmt(r['u0_order'])} | {r['mT']:.3e} | {fmt(r['mT_order'])} |"
        )
    lines.append(f"\nFitted order of the price error in rho: {frame.attrs['fitted_order']:.2f}")
    return "\n".join(lines)


def solution_figure(tests: dict[int, tuple[PaperTest, PriceFormationResult]]):
    """Price vs exact, m(., T) and u(., 0) vs exact, one row per test."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(tests), 3, figsize=(12, 3.4 * len(tests)), squeeze=False)
    for row, (number, (pt, res)) in enumerate(sorted(tests.items())):
        T = pt.problem.horizon
        fine_t = np.linspace(0, T, 400)
        ax = axes[row, 0]
        ax.plot(fine_t, pt.exact.price(fine_t), "k-", lw=1, label="exact")
        ax.plot(res.price_times, res.price, "C0.", ms=2.5, label=f"SL (rho={res.rho:g}, h={res.h:g})")
        ax.set(title=f"Test {number}: price", xlabel="t")
        ax.legend(fontsize=8)
        ax = axes[row, 1]
        ax.plot(res.x, pt.exact.density(res.x, T), "k-", lw=1, label="exact")
        ax.plot(res.x, res.m[-1], "C1--", lw=1.2, label="SL")
        ax.set(title=f"Test {number}: m(x, T)", xlabel="x")
        ax.legend(fontsize=8)
        ax = axes[row, 2]
        ax.plot(res.x, pt.exact.value(res.x, 0.0), "k-", lw=1, label="exact")
        ax.plot(res.x, res.u[0], "C2--", lw=1.2, label="SL")
        ax.set(title=f"Test {number}: u(x, 0)", xlabel="x")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class ReproductionReport:
    """What :func:`run` computed and where it wrote it."""

    table: pd.DataFrame
    orders: pd.DataFrame | None
    files: tuple[Path, ...]
    text: str


def run(out: str | Path, *, meshes=MESHES, with_order: bool = True) -> ReproductionReport:
    """Reproduce the tables, measure the order, write CSV, markdown and the figure to ``out``."""
    out = Path(out)
    table, finest = reproduce_tables(meshes)
    orders = convergence_order(1, meshes) if with_order else None
    text = "## Ashrafyan & Gomes, tables 1 and 2: relative l-infinity errors\n\n" + markdown_table(table)
    if orders is not None:
        text += "\n## Test 1 with tol = 1e-10: observed orders in rho (h = 2 rho)\n\n" + _order_markdown(orders) + "\n"
    files = [write_csv(out / "price_formation_tables.csv", table), write_text(out / "price_formation_tables.md", text)]
    if orders is not None:
        files.append(write_csv(out / "price_formation_order.csv", orders))
    import matplotlib.pyplot as plt

    fig = solution_figure({n: (paper_test(n), res) for n, res in finest.items()})
    files.append(save_figure(out / "price_formation.png", fig))
    plt.close(fig)
    return ReproductionReport(table=table, orders=orders, files=tuple(files), text=text)
