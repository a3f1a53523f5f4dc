"""``gelav dataset``: empirical-style datasets from the finite-N LP market (docs/datasets.md).

    gelav dataset --scenario NAME_OR_FILE --n-lps N --seed S --out DIR [options]
    gelav dataset describe PATH

Registered in :mod:`experiments.cli` by ``main.add_command(dataset)``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

_REALISM = ("stale_nav", "bid_dispersion", "strategies", "funds_per_vintage", "fund_dispersion", "nav_vol")


class _InputError(click.ClickException):
    exit_code = 2


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--scenario", default=None, help="Shipped scenario name (`gelav scenarios`) or a TOML file.")
@click.option("--n-lps", type=click.IntRange(min=1), default=10_000, show_default=True, help="LPs in the market.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Root seed (same seed, same bytes).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder [default: gelav-output/dataset-SCENARIO]")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite an existing dataset in --out.")
@click.option("--realistic", is_flag=True,
              help="Every realism option on (stale NAV 2 quarters, bid dispersion 0.05, strategies, 20 funds per "
                   "vintage, fund dispersion 0.05, NAV volatility 0.10); the options below override it.")
@click.option("--stale-nav", type=click.Choice(["0", "1", "2"]), default=None,
              help="Quarters by which reported NAV lags true NAV [default 0].")
@click.option("--bid-dispersion", type=click.FloatRange(0, 1), default=None,
              help="Sd of the log bid around the clearing price [default 0].")
@click.option("--strategies/--no-strategies", default=None, help="Funds of several strategies with their own "
                                                                   "price levels [default off].")
@click.option("--funds-per-vintage", type=click.IntRange(1, 10_000), default=None, help="[default 1]")
@click.option("--fund-dispersion", type=click.FloatRange(0, 1), default=None,
              help="Sd of a fund's log price premium [default 0].")
@click.option("--nav-vol", type=click.FloatRange(0, 1), default=None,
              help="Volatility of a fund's log true NAV, per sqrt year [default 0].")
@click.option("--nav-drop", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Fall of true NAV at each shock time [default 0.45 x the shock's capital cut].")
@click.option("--market-nav", type=click.FloatRange(min=0, min_open=True), default=1.0e6, show_default=True,
              help="Market NAV in $m.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="numba threads (the data do not depend on it) [default: 1 below 131 072 LPs, else numba's].")
@click.pass_context
def dataset(ctx, scenario, n_lps, seed, out, fmt, force, realistic, stale_nav, bid_dispersion, strategies,
            funds_per_vintage, fund_dispersion, nav_vol, nav_drop, market_nav, threads) -> None:
    """Write transactions, quarterly and lp_panel tables of one finite LP market (docs/datasets.md).

    `gelav dataset describe PATH` prints a dataset's stylised facts beside docs/model.md 2.10.
    """
    if ctx.invoked_subcommand is not None:
        return
    if scenario is None:
        raise click.UsageError("--scenario is required (or use `gelav dataset describe PATH`)")
    from .datasets import REALISTIC, DatasetExists, DatasetOptions, generate
    from .lp_exit_report import ScenarioNotFound

    kw = dict(REALISTIC) if realistic else {}
    given = dict(stale_nav=None if stale_nav is None else int(stale_nav), bid_dispersion=bid_dispersion,
                 strategies=strategies, funds_per_vintage=funds_per_vintage, fund_dispersion=fund_dispersion,
                 nav_vol=nav_vol)
    kw.update({k: v for k, v in given.items() if v is not None})
    try:
        opts = DatasetOptions(**kw, nav_drop=nav_drop, market_nav=market_nav, fmt=fmt)
    except ValueError as exc:
        raise _InputError(str(exc)) from None
    if out is None:
        out = Path("gelav-output") / f"dataset-{Path(scenario).stem}"
    start = time.perf_counter()
    try:
        ds = generate(scenario, n_lps, seed, out, options=opts, force=force, threads=threads)
    except (ScenarioNotFound, DatasetExists, ValueError) as exc:
        raise _InputError(str(exc)) from None
    click.echo(f"dataset of {scenario} ({n_lps:,} LPs, seed {seed}) in {out}/ "
               f"({time.perf_counter() - start:.1f} s)")
    for name, p in ds.files.items():
        rows = ds.rows.get(name)
        click.echo(f"  {p.name:<24} " + (f"{rows:>12,} rows" if rows is not None else ""))
    click.echo(f"`gelav dataset describe {out}` prints its stylised facts")


@dataset.command("describe")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
def describe_cmd(path: Path) -> None:
    """Print the stylised facts of the dataset in PATH beside the public figures (docs/model.md 2.10)."""
    from .datasets_describe import describe, describe_text

    try:
        facts = describe(path)
    except FileNotFoundError as exc:
        raise _InputError(str(exc)) from None
    click.echo(describe_text(facts))


def main() -> None:  # pragma: no cover - python -m experiments.dataset_cli
    dataset(prog_name="gelav dataset")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
