"""What every crisis experiment shares: its report type, output layout and registry.

Data flow of an experiment: scenario TOML(s) → :func:`mfg.lp_exit.solve` /
:func:`mfg.lp_exit.scenarios.solve_scenario` → measured tables (pandas) → ``summary.md``,
CSV tables and PNG figures in ``out/<name>/`` (all written atomically by
:mod:`experiments.io`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from experiments.io import folder_lock, save_figure, write_csv, write_text
from mfg.lp_exit.params import SCENARIO_DIR

__all__ = ["ExperimentReport", "EXPERIMENTS", "register", "write_report", "SCENARIO_DIR"]


@dataclass(frozen=True)
class ExperimentReport:
    """The result of one experiment: its summary, tables and figures, and where they went.

    ``tables`` maps a file stem to a tidy DataFrame (written as ``<stem>.csv``);
    ``figures`` maps a file stem to a matplotlib figure (``<stem>.png``); ``facts``
    holds the headline numbers (what the tests and ``summary.md`` quote).
    """

    name: str
    summary: str
    facts: dict
    tables: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)
    figures: dict = field(default_factory=dict, repr=False)
    files: tuple[Path, ...] = ()


#: name -> run(out, *, quick) of every experiment, in the order ``gelav crisis all`` runs them.
EXPERIMENTS: dict[str, Callable[..., ExperimentReport]] = {}


def register(name: str):
    """Decorator: add an experiment's ``run`` to :data:`EXPERIMENTS` under ``name``; the registered
    (and returned) ``run`` holds the lock of ``out/<name>/`` (:func:`experiments.io.folder_lock`)."""

    def deco(fn):
        if name in EXPERIMENTS:
            raise ValueError(f"crisis experiment {name!r} registered twice")

        @functools.wraps(fn)
        def locked(out, *args, **kwargs):
            # one run at a time in out/<name>/: a second run refuses before it computes anything
            with folder_lock(Path(out) / name, what=f"crisis experiment {name}"):
                return fn(out, *args, **kwargs)

        EXPERIMENTS[name] = locked
        return locked

    return deco


def write_report(report: ExperimentReport, out: Path) -> ExperimentReport:
    """Write ``summary.md``, the CSV tables and the PNG figures to ``out/<name>/``; close the figures."""
    import matplotlib.pyplot as plt

    folder = Path(out) / report.name
    with folder_lock(folder, what=f"crisis experiment {report.name}"):  # held already when run by its command
        files = [write_text(folder / "summary.md", report.summary)]
        for stem, frame in report.tables.items():
            files.append(write_csv(folder / f"{stem}.csv", frame))
        for stem, fig in report.figures.items():
            files.append(save_figure(folder / f"{stem}.png", fig))
            plt.close(fig)
    return ExperimentReport(report.name, report.summary, report.facts, report.tables, {}, tuple(files))


# ----------------------------------------------------------------------------------
# shared by the crisis experiments: scenarios on their grids, one solve each, reported prices
# ----------------------------------------------------------------------------------

#: The quick grid: the scenario's liquidity range with twice its spacing, monthly steps.
QUICK_DT = 1.0 / 12.0


def quick_grid(grid):
    """The ``--quick`` grid of a scenario: twice the liquidity spacing, monthly steps (every event of the
    shipped files falls on a whole month)."""
    from mfg.lp_exit.params import Grid

    return Grid(L_min=grid.L_min, L_max=grid.L_max, n_L=(grid.n_L - 1) // 2 + 1, dt=QUICK_DT)


def load(name: str, quick: bool = False):
    """A shipped scenario (docs/model.md 2.7), on its quick grid with ``quick``."""
    from mfg.lp_exit.params import load_scenario

    sc = load_scenario(name)
    return sc.model_copy(update={"grid": quick_grid(sc.grid)}) if quick else sc


def grid_text(sc) -> str:
    return f"{sc.grid.n_L} liquidity nodes x dt = 1/{round(1 / sc.grid.dt)}"


_SOLVES: dict = {}


def solved(sc, *, events=None):
    """``(calm, scenario result)`` of a scenario (``events``: instead of the file's), cached in the process
    (the six latest): the experiments of ``gelav crisis all`` share the solves of the shipped files."""
    import warnings

    from mfg.lp_exit import ConvergenceWarning, solve
    from mfg.lp_exit.scenarios import solve_scenario

    evs = tuple(sc.events if events is None else events)
    key_calm = (sc.model.model_dump_json(), sc.grid.model_dump_json(), sc.solver.model_dump_json())
    key = key_calm + (tuple(e.model_dump_json() for e in evs),)
    if key not in _SOLVES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # reported through ``converged``
            calm = next((v[0] for k, v in _SOLVES.items() if k[:3] == key_calm), None)
            if calm is None:
                calm = solve(sc.model, sc.grid, sc.solver)
            eq = solve_scenario(sc.model, sc.grid, sc.solver, evs, calm=calm) if evs else calm
        while len(_SOLVES) >= 6:
            _SOLVES.pop(next(iter(_SOLVES)))
        _SOLVES[key] = (calm, eq)
    return _SOLVES[key]


def window_mean(t, x, a: float, b: float) -> float:
    """Mean of ``x`` over the steps ``t_n`` in ``[a, b)`` (NaN if none)."""
    import numpy as np

    t = np.asarray(t, dtype=float)
    tol = 1e-9 * float(t[1] - t[0])
    sel = (t >= a - tol) & (t < b - tol)
    return float(np.mean(np.asarray(x, dtype=float)[sel])) if sel.any() else float("nan")


def window_sum(t, x, a: float, b: float) -> float:
    """``sum x dt`` over the steps ``t_n`` in ``[a, b)`` (a volume from a flow)."""
    import numpy as np

    t = np.asarray(t, dtype=float)
    dt = float(t[1] - t[0])
    sel = (t >= a - 1e-9 * dt) & (t < b - 1e-9 * dt)
    return float(np.sum(np.asarray(x, dtype=float)[sel]) * dt)


def means(t, x, start: float, end: float, step: float) -> list[tuple[float, float]]:
    """``[(period start, mean of x over the period)]`` for periods of ``step`` years from ``start`` to ``end``."""
    out, a = [], start
    while a < end - 1e-9:
        out.append((a, window_mean(t, x, a, a + step)))
        a += step
    return out


def period_label(a: float, step: float) -> str:
    """``H1 2009`` for half-years, ``Q3 2008`` for quarters."""
    import math

    y = math.floor(a + 1e-9)
    return f"{'H' if step == 0.5 else 'Q'}{int(round((a - y) / step)) + 1} {y}"


#: Prices below this (fraction of NAV) are flagged as runs, not plotted as findings (docs/model.md 2.11).
RUN_PRICE = 0.2


def run_flag(price) -> str:
    """``""`` or a warning that a path's price fell below :data:`RUN_PRICE` (a run)."""
    import numpy as np

    p = np.asarray(price, dtype=float)
    p = p[np.isfinite(p)]
    if p.size and float(p.min()) < RUN_PRICE:
        return f"RUN: the price falls to {float(p.min()):.3f} (< {RUN_PRICE:g}): a run, not a price finding"
    return ""


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
