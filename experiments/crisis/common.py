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
