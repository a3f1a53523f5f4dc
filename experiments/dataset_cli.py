"""``gelav dataset``: empirical-style datasets from the finite-N LP market (docs/datasets.md).

    gelav dataset --scenario NAME_OR_FILE --n-lps N --seed S --out DIR [options]
    gelav dataset describe PATH [--figure FILE]

Registered in :mod:`experiments.cli` by ``main.add_command(dataset)``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from .io import OutputFolder


class _InputError(click.ClickException):
    exit_code = 2


def _progress_bar(n_lps: int):
    """A tqdm bar over the market steps (on stderr), as a ``progress(step, n_steps)`` callable."""
    from tqdm import tqdm

    state = {}

    def progress(n, N):
        if "bar" not in state:
            state["bar"] = tqdm(total=N + 1, unit="step", desc=f"market ({n_lps:,} LPs)", file=sys.stderr,
                                mininterval=1.0, disable=not sys.stderr.isatty())  # no bar in logs and pipes
        state["bar"].update(1)
        if n >= N:
            state["bar"].close()

    return progress


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--scenario", default=None, help="Shipped scenario name (`gelav scenarios`) or a TOML file.")
@click.option("--n-lps", type=click.IntRange(min=1), default=10_000, show_default=True, help="LPs in the market.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Root seed (same seed, same bytes).")
@click.option("--out", type=OutputFolder(), default=None,
              help="Output folder [default: gelav-output/dataset-SCENARIO]")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite an existing dataset in --out.")
@click.option("--equal", is_flag=True, help="Equal LPs: one buyout fund per vintage, no commitment or quality "
                                            "dispersion (the market of docs/model.md 2.8 without weights).")
@click.option("--commitment-sd", type=click.FloatRange(0, 3), default=None, help="Sd of log commitment [1.2].")
@click.option("--quality-sd", type=click.FloatRange(0, 1), default=None, help="Sd of a fund's log quality [0.07].")
@click.option("--funds-per-strategy", type=click.IntRange(1, 10_000), default=None,
              help="Funds per vintage and strategy [8].")
@click.option("--bidders", type=click.FloatRange(0, 100), default=None,
              help="Mean losing bidders per sale process at the buyers' calm capital [4].")
@click.option("--mean-commitment", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Mean commitment of a stake, $m [25].")
@click.option("--realistic", is_flag=True, help="Reporting overlays on: stale NAV 2 quarters, NAV volatility 0.10.")
@click.option("--stale-nav", type=click.Choice(["0", "1", "2"]), default=None,
              help="Quarters by which reported NAV lags true NAV [0].")
@click.option("--nav-vol", type=click.FloatRange(0, 1), default=None, help="Volatility of log true NAV [0].")
@click.option("--nav-drop", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Fall of true NAV at each shock time [0.45 x the shock's capital cut].")
@click.option("--panel", type=click.Choice(["quarterly", "none"]), default="quarterly", show_default=True,
              help="Write the holdings panel (every LP at every quarter end) and its truth.")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="Where the partitions are built and written (the files are the same bytes).")
@click.option("--scheduler", default=None, help="Dask scheduler address (default: a local cluster).")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Processes of the local Dask cluster.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="numba threads (the data do not depend on it) [default: 1 below 131 072 LPs, else numba's].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def dataset(ctx, scenario, n_lps, seed, out, fmt, force, equal, commitment_sd, quality_sd, funds_per_strategy, bidders,
            mean_commitment, realistic, stale_nav, nav_vol, nav_drop, panel, executor, scheduler, workers, threads,
            quiet) -> None:
    """Write the deals, withdrawn sale processes, holdings, LPs, funds, aggregates and truth of one finite LP
    market (docs/datasets.md).

    `gelav dataset describe PATH` checks a dataset's stylised facts against docs/model.md 2.10/2.11.
    """
    if ctx.invoked_subcommand is not None:
        return
    if scenario is None:
        raise click.UsageError("--scenario is required (or use `gelav dataset describe PATH`)")
    from .datasets import EQUAL, REALISTIC, DatasetExists, DatasetOptions, generate
    from .lp_exit_report import ScenarioNotFound

    kw = dict(EQUAL) if equal else {}
    kw.update(REALISTIC if realistic else {})
    given = dict(commitment_sd=commitment_sd, quality_sd=quality_sd, funds_per_strategy=funds_per_strategy,
                 bidders=bidders, mean_commitment=mean_commitment,
                 stale_nav=None if stale_nav is None else int(stale_nav), nav_vol=nav_vol)
    kw.update({k: v for k, v in given.items() if v is not None})
    try:
        opts = DatasetOptions(**kw, nav_drop=nav_drop, fmt=fmt, panel=panel)
    except ValueError as exc:
        raise _InputError(str(exc)) from None
    if out is None:
        out = Path("gelav-output") / f"dataset-{Path(scenario).stem}"
    start = time.perf_counter()
    try:
        ds = generate(scenario, n_lps, seed, out, options=opts, force=force, threads=threads,
                      progress=None if quiet else _progress_bar(n_lps), executor=executor, client=scheduler,
                      workers=workers)
    except (ScenarioNotFound, DatasetExists, ValueError) as exc:
        raise _InputError(str(exc)) from None
    click.echo(f"dataset of {scenario} ({n_lps:,} LPs, seed {seed}) in {out}/ ({time.perf_counter() - start:.1f} s)")
    for name, rows in ds.rows.items():
        click.echo(f"  {name:<20} {rows:>14,} rows")
    click.echo(f"`gelav dataset describe {out}` checks its stylised facts")


@dataset.command("describe")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--figure", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the one-page figure [default: PATH/stylised_facts.png].")
@click.option("--no-figure", is_flag=True, help="Print the checks only.")
def describe_cmd(path: Path, figure: Path | None, no_figure: bool) -> None:
    """Check the stylised facts of the dataset in PATH against docs/model.md 2.10/2.11 (a miss is flagged
    MISS, with its number) and draw them on one page."""
    from .datasets_describe import describe, describe_text, stylised_figure

    try:
        facts = describe(path)
    except FileNotFoundError as exc:
        raise _InputError(str(exc)) from None
    click.echo(describe_text(facts))
    if not no_figure:
        click.echo(f"figure: {stylised_figure(path, figure)}")


def main() -> None:  # pragma: no cover - python -m experiments.dataset_cli
    dataset(prog_name="gelav dataset")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
