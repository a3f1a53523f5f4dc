"""The ``gelav`` command line: a thin layer over the experiment functions."""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import click

from .io import OutputFolder

DEFAULT_OUT = Path("gelav-output")


class InputError(click.ClickException):
    """Bad user input (a missing or invalid scenario file): a one-line message, exit code 2."""

    exit_code = 2


class SolveError(click.ClickException):
    """A valid input the model cannot solve (a collapsing market, a non-finite number): one line, exit code 1."""

    exit_code = 1


def _pydantic_message(exc, raw: dict | None) -> str:
    """One line naming each offending field of a ``pydantic.ValidationError``.

    ``model.populations[0] (pension-2011).kappa: Input should be ... (got -1.0)``: the
    population's name is taken from the raw TOML data when it has one.
    """
    parts = []
    for err in exc.errors(include_url=False):
        # the market is a union chosen by its ``kind``: pydantic puts the tag in the location
        loc = tuple(item for i, item in enumerate(err.get("loc", ()))
                    if not (i > 0 and err["loc"][i - 1] == "market" and item in ("clearing", "impact")))
        path, node = "", raw
        for item in loc:
            if isinstance(item, int):
                path += f"[{item}]"
                node = node[item] if isinstance(node, list) and item < len(node) else None
                if isinstance(node, dict) and isinstance(node.get("name"), str):
                    path += f" ({node['name']})"
            else:
                path += ("." if path else "") + str(item)
                node = node.get(item) if isinstance(node, dict) else None
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        got = err.get("input")
        if isinstance(got, (int, float, str, bool)) and err.get("type") not in ("missing",) and path:
            msg += f" (got {got!r})"
        parts.append(f"{path}: {msg}" if path else msg)
    head = f"{len(parts)} errors: " if len(parts) > 1 else ""
    return head + "; ".join(" ".join(p.split()) for p in parts)


def load_scenario_or_exit(name_or_path: str):
    """``(path, Scenario)`` for a shipped name or a file; bad input raises :class:`InputError` (exit code 2)."""
    import tomllib

    import pydantic

    from mfg.lp_exit.params import Scenario

    from .lp_exit_report import ScenarioNotFound, resolve_scenario

    try:
        path = resolve_scenario(name_or_path)
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except ScenarioNotFound as exc:
        raise InputError(str(exc)) from None
    except OSError as exc:
        raise InputError(f"cannot read {name_or_path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None
    try:
        return path, Scenario.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise InputError(f"{path}: {_pydantic_message(exc, raw)}") from None


def _solve_echoing_warnings(fn, *args, **kwargs):
    """Run ``fn``, echo the solver's own warnings (convergence, boundary mass) as one line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    for w in caught:
        if w.category.__module__.startswith("mfg"):
            click.echo(f"warning: {w.message}", err=True)
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gelav")
def main() -> None:
    """gelav: finite-N markets of investors beside their mean-field-game limits."""


def _notice(what: str, seconds: float, *modules: str) -> None:
    """Echo that the first run compiles ``what`` (about ``seconds``), only when numba's cache lacks it."""
    from .compile_notice import compile_notice

    line = compile_notice(what, seconds, *modules)
    if line:
        click.echo(line)


@main.command()
@click.option("--out", type=OutputFolder(), default=DEFAULT_OUT / "demo",
              show_default=True, help="Folder for the figures.")
def demo(out: Path) -> None:
    """Price formation (test 1 vs its exact solution), then the LP-exit game: calm market and shock demo."""
    import matplotlib.pyplot as plt

    from mfg.price_formation import solve

    from .io import save_figure
    from .price_formation_paper import PUBLISHED, paper_test
    from .reproduce_price_formation import solution_figure

    start = time.perf_counter()
    rho, h = 0.0025, 0.005
    pt = paper_test(1)
    click.echo("Price-formation MFG, Ashrafyan & Gomes test 1 (LQ, exact solution known)")
    click.echo(f"mesh rho={rho}, h={h} ({int(2 / rho) + 1} x {int(1 / h) + 1} nodes), tol={pt.tol}")
    _notice("the price-formation solver", 5, "mfg.price_formation.solver", "mfg.semi_lagrangian")
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
    _demo_lp_exit(out)
    _demo_convergence(out)
    click.echo(f"demo total: {time.perf_counter() - start:.1f} s (figures included)")


def _demo_convergence(out: Path) -> None:
    """The convergence part of the demo: a small O(1/sqrt(N)) study of the LP market (in-process)."""
    from .convergence import demo_config, run_study

    start = time.perf_counter()
    click.echo("")
    click.echo("Finite-N LP market with the MFG policy against the MFG (docs/model.md 2.8), N = 10^3.5..10^4.5 "
               "(`gelav convergence` runs the full study)")
    _notice("the finite-N market", 25, "abm.lp_market.kernels", "abm.lp_market.auction")
    res = run_study(demo_config(), out / "convergence", executor="inprocess", overwrite=True, progress=False,
                    dpi=90)
    picked = res.slopes.set_index("quantity")
    m_last = [q for q in picked.index if q.startswith("M(")][-1]
    for q, label in (("P_avg", "time-average abs(P^N - P)"), ("F(T)", "fraction exited at T"),
                     (m_last, "mean liquidity at T")):
        r = picked.loc[q]
        click.echo(f"  RMSE slope of {label:<26} {r['slope']:+.3f} [{r['slope_lo']:+.3f}, {r['slope_hi']:+.3f}] "
                   f"(theory -0.5)")
    e = res.exploitability
    click.echo(f"  exploitability of the MFG policy: {e['exploitability'].iloc[0]:.1e} at N = {e['n'].iloc[0]:.0e}, "
               f"{e['exploitability'].iloc[-1]:.1e} at N = {e['n'].iloc[-1]:.0e} (MFG's own "
               f"{e['mfg_exploitability'].iloc[0]:.1e})")
    click.echo(f"figure: {out / 'convergence' / 'convergence.png'}")
    click.echo(f"convergence part: {time.perf_counter() - start:.1f} s")


def _demo_lp_exit(out: Path) -> None:
    """The LP-exit part of the demo: the calm market and the shock demo (equilibrium vs DCF baseline)."""
    import matplotlib.pyplot as plt

    from mfg.lp_exit import solve
    from mfg.lp_exit.baselines import baseline_paths
    from mfg.lp_exit.scenarios import solve_scenario

    from .io import save_figure
    from .lp_exit_report import amplification_figure, amplification_summary, lp_exit_figure, summary

    start = time.perf_counter()
    click.echo("")
    click.echo("LP-exit MFG (docs/model.md 2): limited partners sell fund stakes on a secondary market")
    _notice("the LP-exit solver and its baselines", 45, "mfg.lp_exit.kernels", "mfg.lp_exit.clearing",
            "mfg.lp_exit.baselines")
    _, calm = load_scenario_or_exit("calm")
    res = _solve_echoing_warnings(solve, calm.model, calm.grid, calm.solver)
    s = summary(res, calm.report_window)
    r0, r1 = calm.report_window
    click.echo(f"calm market, reported {r0:g}-{r1:g}, {len(res.populations)} populations "
               f"({res.L.size} x {res.t.size} grid): "
               f"{res.iterations} iterations, {res.timings['total']:.2f} s")
    click.echo(f"  discount {s['discount_min_pct']:.1f}% to {s['discount_max_pct']:.1f}% of NAV "
               f"(mean {s['discount_mean_pct']:.1f}%; public: 5 to 15%)")
    click.echo(f"  sales {s['annual_volume_mean_pct']:.2f}% of active NAV a year (public: 1 to 2.5%), "
               f"{100 * s['second_half_share']:.0f}% of them in second halves (public: 55 to 65%)")
    fig = lp_exit_figure(res, title="LP exit: calm market", window=calm.report_window)
    click.echo(f"figure: {save_figure(out / 'lp_exit_calm.png', fig, dpi=110)}")
    plt.close(fig)

    _, shock = load_scenario_or_exit("shock_demo")
    eq = _solve_echoing_warnings(solve_scenario, shock.model, shock.grid, shock.solver, shock.events)
    paths = _solve_echoing_warnings(baseline_paths, shock.model, shock.grid, shock.solver, shock.events,
                                    calm=eq.segments[0])
    amp = amplification_summary(eq, paths)
    r_eq, r_fr = amp["paths"]["equilibrium"], amp["paths"]["first_round"]
    click.echo(f"shock demo: liquidity squeeze and 40% loss of buyer capital at {amp['shock_time']:g} "
               f"({eq.timings['total'] + sum(p.timings['total'] for p in paths.values()):.2f} s)")
    click.echo(f"  trough discount against the no-event price: equilibrium {100 * r_eq['trough']:.1f}% after "
               f"{12 * r_eq['time_to_trough']:.1f} months, first round (pre-shock reservation values) "
               f"{100 * r_fr['trough']:.1f}%")
    click.echo(f"  amplification multiplier (equilibrium / first round) {amp['multiplier']:.2f}; NAV sold in the year "
               f"after: {100 * r_eq['nav_sold_year_after']:.1f}% vs {100 * r_fr['nav_sold_year_after']:.1f}%")
    fig = lp_exit_figure(eq, title="LP exit: shock demo (equilibrium)", window=shock.report_window)
    click.echo(f"figure: {save_figure(out / 'lp_exit_shock_demo.png', fig, dpi=110)}")
    plt.close(fig)
    fig = amplification_figure(eq, paths, amp, title="Shock demo: the paths of docs/model.md 2.7")
    click.echo(f"figure: {save_figure(out / 'lp_exit_amplification.png', fig, dpi=110)}")
    plt.close(fig)
    click.echo(f"LP-exit part: {time.perf_counter() - start:.1f} s")


@main.command("lp-exit")
@click.argument("scenario")
@click.option("--out", type=OutputFolder(), default=None,
              help="Folder for CSV frames, figures and summary  [default: gelav-output/lp-exit/<scenario name>]")
@click.option("--method", type=click.Choice(["sl", "fd"]), default="sl", show_default=True,
              help="sl: second-order semi-Lagrangian scheme; fd: the finite-difference cross-check.")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="With shock events: also the baselines of docs/model.md 2.7 (DCF, first round, myopic) and the "
                   "amplification multiplier.")
@click.option("--dpi", type=click.IntRange(50, 400), default=110, show_default=True, help="Resolution of the figures.")
def lp_exit(scenario: str, out: Path | None, method: str, baseline: bool, dpi: int) -> None:
    """Solve an LP-exit scenario: a shipped name (see `gelav scenarios`) or a TOML file.

    Prints the summary and writes market.csv, populations.csv, lp_exit.png and summary.txt
    (with events and --baseline also baseline_*.csv, amplification.csv, amplification.png).
    Exit code 2 for a missing or invalid scenario file, 1 if the fixed point did not converge.
    """
    from .lp_exit_report import run

    path, sc = load_scenario_or_exit(scenario)
    out = DEFAULT_OUT / "lp-exit" / path.stem if out is None else out
    n_t = round((sc.model.end - sc.model.start) / sc.grid.dt) + 1
    what = f"{len(sc.events)} event(s), equilibrium" + (" and the baselines" if baseline else "") \
        if sc.events else "equilibrium"
    click.echo(f"{path}: {len(sc.model.populations)} populations, {sc.grid.n_L} x {n_t} grid (L x t), "
               f"method {method}; solving the {what}...")
    _notice("the LP-exit solver", 30, "mfg.lp_exit.kernels", "mfg.lp_exit.clearing", "mfg.lp_exit.fd")
    start = time.perf_counter()
    try:
        report = _solve_echoing_warnings(run, sc, out, method=method, baseline=baseline, name=path.stem,
                                        dpi=dpi)
    except (ValueError, MemoryError) as exc:  # a scenario the solver refuses (e.g. dt not dividing the window)
        raise InputError(f"{path}: {' '.join(str(exc).split())}") from None
    except FloatingPointError as exc:  # the market collapsed or a number stopped being finite: named in the message
        raise SolveError(f"{path}: {' '.join(str(exc).split())}") from None
    click.echo(report.text)
    click.echo(f"wall time {time.perf_counter() - start:.1f} s (solves, figures and files)")
    click.echo("written: " + ", ".join(str(p) for p in report.files))
    converged = report.result.converged and (report.baseline is None
                                             or all(p.converged for p in report.baseline.values()))
    if not converged:
        click.echo("WARNING: the fixed point did not reach its tolerance (raise solver.max_iter or the "
                   "temperature); the outputs are the last iterate", err=True)
    sys.exit(0 if converged else 1)


@main.command()
@click.option("--quick", is_flag=True, help="Reduced study: N up to 1e5, fewer replications (under a minute).")
@click.option("--out", type=OutputFolder(), default=None,
              help="Study folder (resumable): task files, CSV tables, summary, figure  "
                   "[default: gelav-output/convergence or gelav-output/convergence-quick]")
@click.option("--models", default=None,
              help="Comma-separated models: lp (calm LP market, solver's step, with the epsilon-Nash bounds), "
                   "lp-exact (exact OU step), lp-exact-fine (exact step at dt = 1/52), lp-2008 (the 2008 "
                   "crisis scenario), pf (price formation)  [default: lp,lp-2008,pf; --quick: lp,pf]")
@click.option("--executor", type=click.Choice(["auto", "inprocess", "processes", "dask"]), default="auto",
              show_default=True, help="Where the tasks run (auto: processes when more than one worker).")
@click.option("--workers", type=click.IntRange(1, None), default=None,
              help="Worker processes (processes, local Dask cluster)  [default: the CPUs available]")
@click.option("--scheduler", default=None, help="Address of a running Dask scheduler (implies --executor dask).")
@click.option("--seed", type=click.IntRange(0, None), default=None, help="Sweep seed  [default: 20261122]")
@click.option("--overwrite", is_flag=True, help="Discard a different study found in the folder.")
@click.option("--dpi", type=click.IntRange(50, 400), default=110, show_default=True, help="Figure resolution.")
def convergence(quick: bool, out: Path | None, models: str | None, executor: str, workers: int | None,
                scheduler: str | None, seed: int | None, overwrite: bool, dpi: int) -> None:
    """The O(1/sqrt(N)) convergence study: finite-N markets against their MFG limits.

    Writes convergence.csv, slopes.csv, exploitability.csv, epsilon_nash.csv, epsilon_rates.csv,
    markets.csv, summary.md, convergence.png and epsilon_nash.png into the folder and prints the
    summary.  The folder is resumable: a re-run skips the finished tasks (docs/convergence.md).
    """
    from dataclasses import replace

    from . import convergence as cv
    from .runner import SweepConfigError

    config = cv.quick_config() if quick else cv.default_config()
    if models:
        try:
            config = config.with_models([m.strip() for m in models.split(",") if m.strip()])
        except ValueError as exc:
            raise InputError(str(exc)) from None
    if seed is not None:
        config = replace(config, seed=seed)
    if scheduler is not None:
        if executor not in ("auto", "dask"):
            raise InputError(f"--scheduler needs --executor dask (got {executor})")
        if workers is not None:
            raise InputError("--workers sizes a local cluster; a running scheduler has its own workers")
        executor = "dask"
    out = DEFAULT_OUT / ("convergence-quick" if quick else "convergence") if out is None else out
    n_tasks = len(cv.plan_tasks(config))
    click.echo(f"convergence study ({config.label}): models {', '.join(config.models)}, {n_tasks} tasks, "
               f"executor {executor}, folder {out}")
    try:
        res = cv.run_study(config, out, executor=executor, n_workers=workers, scheduler=scheduler,
                           overwrite=overwrite, dpi=dpi)
    except SweepConfigError as exc:
        raise InputError(f"{exc}\n(pass --overwrite to discard it)") from None
    click.echo(res.summary)
    click.echo("written: " + ", ".join(str(p) for p in res.files))


@main.command()
def scenarios() -> None:
    """List the shipped LP-exit scenarios (use the name with `gelav lp-exit NAME`)."""
    from .lp_exit_report import shipped_scenarios

    shipped = shipped_scenarios()
    if not shipped:
        click.echo("no shipped scenarios found")
        return
    width = max(len(n) for n in shipped)
    for name, (_path, description) in shipped.items():
        click.echo(f"{name:<{width}}  {description}")
    click.echo(f"(files in {next(iter(shipped.values()))[0].parent})")


@main.group()
def reproduce() -> None:
    """Reproduce published results."""


@reproduce.command("price-formation")
@click.option("--out", type=OutputFolder(), default=DEFAULT_OUT / "price-formation",
              show_default=True, help="Folder for CSV, markdown and figure.")
@click.option("--order/--no-order", default=True, show_default=True,
              help="Also measure the convergence order of test 1 at tol=1e-10.")
@click.option("--finite-n", is_flag=True, help="Also run the N-trader market and print the 1/sqrt(N) table.")
@click.option("--seed", type=int, default=20261122, show_default=True, help="Seed of the N-trader markets.")
def reproduce_price_formation(out: Path, order: bool, finite_n: bool, seed: int) -> None:
    """Tables 1 and 2 of Ashrafyan & Gomes side by side with ours."""
    from .reproduce_price_formation import run

    click.echo("Solving both tests on the paper's four meshes...")
    _notice("the price-formation solver", 5, "mfg.price_formation.solver", "mfg.semi_lagrangian")
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


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on (0: a free one).")
@click.option("--no-browser", is_flag=True, help="Do not open a browser tab.")
def dashboard(host: str, port: int, no_browser: bool) -> None:
    """Browser dashboard: a scenario and a shock, the MFG equilibrium beside a finite-N market (docs/dashboard.md).

    Needs the dashboard extra (pip install -e ".[dashboard]"); Ctrl-C stops the server.
    Exit code 2 when the port is in use or solara is missing.
    """
    import importlib.util

    from .dashboard.server import PortInUse, check_port, serve, url

    if importlib.util.find_spec("solara") is None:
        raise InputError('the dashboard needs solara: pip install -e ".[dashboard]"')
    try:
        port = check_port(host, port)
    except PortInUse as exc:
        raise InputError(str(exc)) from None
    click.echo(f"gelav dashboard at {url(host, port)} (Ctrl-C stops it)")
    serve(host, port, open_browser=not no_browser)


# command groups that live beside their experiments (imported lazily inside their commands)
from .crisis.cli import crisis as _crisis_group  # noqa: E402
from .dataset_cli import dataset as _dataset_group  # noqa: E402

main.add_command(_crisis_group)
main.add_command(_dataset_group)


if __name__ == "__main__":  # pragma: no cover
    main()
