"""The ``gelav`` command line: a thin layer over the experiment functions."""

from __future__ import annotations

import sys
from pathlib import Path

import click

DEFAULT_OUT = Path("gelav-output")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gelav")
def main() -> None:
    """gelav: finite-N markets of investors beside their mean-field-game limits."""


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_OUT / "demo",
              show_default=True, help="Folder for the figure.")
def demo(out: Path) -> None:
    """Solve the paper's test 1 and compare with the exact solution."""
    import matplotlib.pyplot as plt

    from mfg.price_formation import solve

    from .io import save_figure
    from .price_formation_paper import PUBLISHED, paper_test
    from .reproduce_price_formation import solution_figure

    rho, h = 0.0025, 0.005
    pt = paper_test(1)
    click.echo("Price-formation MFG, Ashrafyan & Gomes test 1 (LQ, exact solution known)")
    click.echo(f"mesh rho={rho}, h={h} ({int(2 / rho) + 1} x {int(1 / h) + 1} nodes), tol={pt.tol}")
    click.echo("(the first run compiles the numba kernels and caches them: a few seconds)")
    result = solve(pt.problem, rho=rho, h=h, tol=pt.tol)
    errors = pt.errors(result)
    paper = PUBLISHED[1][rho]
    click.echo(f"iterations: {result.iterations} (paper: 4), residuals: "
               + ", ".join(f"{r:.2g}" for r in result.residuals))
    click.echo(f"solve time: {result.wall_time:.3f} s")
    click.echo("relative l-inf error   ours       paper")
    for (key, label), published in zip((("price", "price"), ("u0", "u(.,0)"), ("mT", "m(.,T)")), paper):
        click.echo(f"  {label:<20} {errors[key]:.2e}   {published:.1e}")
    fig = solution_figure({1: (pt, result)})
    path = save_figure(out / "price_formation_test1.png", fig)
    plt.close(fig)
    click.echo(f"figure: {path}")


@main.group()
def reproduce() -> None:
    """Reproduce published results."""


@reproduce.command("price-formation")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_OUT / "price-formation",
              show_default=True, help="Folder for CSV, markdown and figure.")
@click.option("--order/--no-order", default=True, show_default=True,
              help="Also measure the convergence order of test 1 at tol=1e-10.")
@click.option("--finite-n", is_flag=True, help="Also run the N-trader market and print the 1/sqrt(N) table.")
@click.option("--seed", type=int, default=20261122, show_default=True, help="Seed of the N-trader markets.")
def reproduce_price_formation(out: Path, order: bool, finite_n: bool, seed: int) -> None:
    """Tables 1 and 2 of Ashrafyan & Gomes side by side with ours."""
    from .reproduce_price_formation import run

    click.echo("Solving both tests on the paper's four meshes (first run compiles numba kernels)...")
    report = run(out, with_order=order)
    click.echo(report.text)
    if finite_n:
        from .finite_n_price import finite_n_table, format_table
        from .io import write_csv, write_text

        click.echo("N-trader market against the MFG (test 1, LQ): |price^N - price| ~ 1/sqrt(N)")
        table = finite_n_table(seed=seed)
        text = format_table(table)
        click.echo(text)
        report = report.__class__(report.table, report.orders,
                                  report.files + (write_csv(out / "finite_n.csv", table),
                                                  write_text(out / "finite_n.md", text)), report.text)
    ok = bool(report.table["within_targets"].all())
    click.echo("written: " + ", ".join(str(p) for p in report.files))
    click.echo("all meshes within the targets (price 20%, u and m factor 2.5, iterations)"
               if ok else "WARNING: some meshes miss the targets; see the ratio columns in the CSV")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":  # pragma: no cover
    main()
