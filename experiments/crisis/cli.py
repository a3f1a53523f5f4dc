"""``gelav crisis``: one command per registered crisis experiment, and ``all``.

The group is built from :data:`experiments.crisis.common.EXPERIMENTS` after importing the
experiment modules named in :data:`MODULES`.  Register it on the main command line with
``main.add_command(crisis)`` (``from experiments.crisis.cli import crisis``).

The group is lazy: importing this module imports neither the experiments nor numpy/pandas, so
``gelav --help`` stays fast; the experiment modules are imported when a crisis command (or
``gelav crisis --help``) needs them.
"""

from __future__ import annotations

import importlib
import time
import warnings
from pathlib import Path

import click

from ..io import OutputFolder

__all__ = ["MODULES", "crisis", "load_experiments"]

#: Experiment modules of :mod:`experiments.crisis`, in the order ``gelav crisis all`` runs them (the facts
#: last: ``all`` ends with their table).
MODULES = ("amplification", "recovery", "spillover", "seasonality", "lp_types", "finite_n", "equilibria",
           "calibration", "facts")

DEFAULT_OUT = Path("gelav-output") / "crisis"


def load_experiments() -> dict:
    """Import every module of :data:`MODULES` (each registers itself); return :data:`EXPERIMENTS`
    ordered as :data:`MODULES` (experiments registered under other names follow)."""
    for name in MODULES:
        importlib.import_module(f"{__package__}.{name}")
    from .common import EXPERIMENTS

    order = {n: i for i, n in enumerate(MODULES)}
    return dict(sorted(EXPERIMENTS.items(), key=lambda kv: order.get(kv[0], len(order))))


def _headline(report) -> str:
    """The headline numbers of a summary: its bold lines (``**...**``), and every line that reports a failed
    check or a run, in plain words."""
    keep = []
    for line in report.summary.splitlines():
        s = line.strip()
        if s.startswith("**") or "FAILED" in s or s.startswith("RUN"):
            keep.append(s.replace("**", ""))
    if keep:
        return "\n".join(keep)
    body = [ln for ln in report.summary.splitlines() if ln.strip() and not ln.startswith("#")]
    return body[0] if body else ""


def _run_one(name: str, fn, out: Path, quick: bool):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the experiments record non-convergence and edge mass in their tables
        report = fn(out, quick=quick)
    return report, time.perf_counter() - start


_OUT = click.option("--out", type=OutputFolder(), default=DEFAULT_OUT, show_default=True,
                    help="Folder; each experiment writes to OUT/<name>/.")
_QUICK = click.option("--quick", is_flag=True, help="Coarse grids (seconds instead of tens of seconds).")


class _LazyGroup(click.Group):
    """A group whose experiment commands are built from the registry on first use."""

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(load_experiments()))

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            return cmd
        fn = load_experiments().get(name)
        return None if fn is None else _make_command(name, fn)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def crisis() -> None:
    """Crisis experiments on the LP-exit MFG: amplification, recovery, cross-vintage spillover, ...

    Each writes summary.md, CSV tables and PNG figures to OUT/<name>/.
    """


def _make_command(name: str, fn):
    doc = (fn.__doc__ or "").strip().splitlines()
    mod_doc = (getattr(importlib.import_module(fn.__module__), "__doc__", "") or "").strip().splitlines()
    help_text = (mod_doc[0] if mod_doc else (doc[0] if doc else name))

    @click.command(name, help=help_text)
    @_OUT
    @_QUICK
    def cmd(out: Path, quick: bool) -> None:
        report, secs = _run_one(name, fn, out, quick)
        click.echo(_headline(report))
        if name == "facts":
            click.echo(report.facts["table"])
        click.echo(f"{name}: {secs:.1f} s; written: " + ", ".join(str(p) for p in report.files))

    return cmd


@crisis.command("all")
@_OUT
@_QUICK
def run_all(out: Path, quick: bool) -> None:
    """Run every registered experiment (one folder each), print each one's headline numbers and failed checks,
    and end with the table of the facts (docs/model.md 2.11)."""
    import sys

    from tqdm import tqdm

    experiments = load_experiments()
    start = time.perf_counter()
    lines = []
    bar = tqdm(experiments.items(), total=len(experiments), desc="crisis experiments", unit="exp",
               disable=not sys.stderr.isatty())
    for name, fn in bar:
        bar.set_postfix_str(name)
        report, secs = _run_one(name, fn, out, quick)
        lines.append((name, secs, report))
    bar.close()
    for name, secs, report in lines:
        click.echo(f"== {name} ({secs:.1f} s): {report.files[0] if report.files else ''}")
        for h in _headline(report).splitlines():
            click.echo(f"   {h}")
    facts = next((r for n, _, r in lines if n == "facts"), None)
    if facts is not None:
        click.echo("")
        click.echo(facts.facts["table"])
    click.echo(f"all {len(lines)} experiments: {time.perf_counter() - start:.1f} s; outputs in {out}")
