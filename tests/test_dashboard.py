"""``gelav dashboard``: the computing layer (shock, caches, uploads, downloads), the command, and the page in a
headless Chromium (docs/dashboard.md)."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from experiments.cli import load_scenario_or_exit, main
from experiments.dashboard import compute as C

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _empty_caches():
    C.EQUILIBRIA.clear()
    C.SIMULATIONS.clear()
    yield
    C.EQUILIBRIA.clear()
    C.SIMULATIONS.clear()


def _scenario(name="crisis_2008"):
    return C.shipped_scenario(name)[0]


def _bad_kappa(name="crisis_2008") -> str:
    """A shipped file's text with the first population's kappa made negative."""
    text = (ROOT / "mfg/lp_exit/library" / f"{name}.toml").read_text()
    bad, n = re.subn(r"(?m)^kappa\s*=.*$", "kappa = -1.0", text, count=1)
    assert n == 1
    return bad


# ----------------------------------------------------------------------------------
# the shock
# ----------------------------------------------------------------------------------


def test_shock_of_partial_breadth_splits_the_populations_hit_and_keeps_the_scenarios_events():
    sc = _scenario()
    endowments = [p.name for p in sc.model.populations if p.lp_type == "endowment"]
    assert len(endowments) > 1  # a vintage ladder: the LP type selects all of them
    shock = C.Shock(time=2008.3, liquidity_shift=-0.5, capital_cut=0.25, populations=("endowment",), share=0.4)
    out = C.shocked_scenario(sc, shock)
    pops = {p.name: p for p in out.model.populations}
    assert len(pops) == len(sc.model.populations) + len(endowments)
    w0 = {p.name: p.weight for p in sc.model.populations}
    for name in endowments:
        hit = name + C.HIT_SUFFIX
        assert pops[name].weight == pytest.approx(0.6 * w0[name])
        assert pops[hit].weight == pytest.approx(0.4 * w0[name])
        assert pops[hit].model_dump(exclude={"name", "weight"}) == pops[name].model_dump(exclude={"name", "weight"})
    own = {e.name: e for e in out.events}
    before = {e.name: e for e in sc.events}
    for name, e in before.items():  # the scenario's own events still hit the whole of every split population
        expect = [x for n in e.populations for x in ((n, n + C.HIT_SUFFIX) if n in endowments else (n,))]
        assert list(own[name].populations) == expect
    ours = own["dashboard"]
    assert ours.populations == tuple(n + C.HIT_SUFFIX for n in endowments)
    assert (ours.liquidity_shift, ours.capital_cut) == (-0.5, 0.25)
    dt = float(sc.grid.dt)
    assert ours.time == pytest.approx(C.snap_time(sc, 2008.3))
    assert abs((ours.time - sc.model.start) / dt - round((ours.time - sc.model.start) / dt)) < 1e-9
    idx = [k for k, p in enumerate(sc.model.populations) if p.lp_type == "endowment"]
    assert C.nav_share_hit(sc, shock) == pytest.approx(0.4 * sc.model.weights[idx].sum())
    # one population by name
    one = C.shocked_scenario(sc, C.Shock(time=2009.0, liquidity_shift=-0.2, populations=(endowments[0],), share=0.5))
    assert len(one.model.populations) == len(sc.model.populations) + 1
    # whole populations: no split; no shock of its own and no own events: no events at all
    full = C.shocked_scenario(sc, C.Shock(time=2009.0, liquidity_shift=-0.2))
    assert len(full.model.populations) == len(sc.model.populations) and full.events[-1].populations == ()
    assert C.shocked_scenario(sc, C.Shock(time=2009.0, keep_events=False)).events == ()


def test_splitting_a_population_leaves_the_equilibrium_unchanged():
    from mfg.lp_exit import solve

    sc = _scenario("lp_types")
    split = C.shocked_scenario(sc, C.Shock(time=2009.0, liquidity_shift=-0.3, populations=("pension",), share=0.3))
    a = solve(sc.model, sc.grid, sc.solver)
    b = solve(split.model, split.grid, split.solver)  # the split model, no shock
    assert np.max(np.abs(a.price - b.price)) < 1e-9
    assert np.max(np.abs(a.sell_flow - b.sell_flow)) < 1e-9


def test_bad_shocks_and_times():
    sc = _scenario()
    with pytest.raises(C.DashboardInputError, match=r"unknown population\(s\) \['banks'\]"):
        C.shocked_scenario(sc, C.Shock(time=2009.0, liquidity_shift=-0.1, populations=("banks",)))
    with pytest.raises(C.DashboardInputError, match="share of LPs hit"):
        C.shocked_scenario(sc, C.Shock(time=2009.0, liquidity_shift=-0.1, share=0.0))
    dt = float(sc.grid.dt)
    assert C.snap_time(sc, sc.model.start - 5) == pytest.approx(sc.model.start + dt)
    assert C.snap_time(sc, sc.model.end + 5) == pytest.approx(sc.model.end - dt)
    assert C.default_shock_time(sc) == pytest.approx(sc.events[0].time)


# ----------------------------------------------------------------------------------
# uploads: the command line's wording, one line
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    (b"[model\nstart = 1", "not valid TOML"),
    (None, ").kappa: Input should be greater than or equal to 0 (got -1.0)"),
    (b"\xff\xfe[model]", "not a UTF-8 text file"),
])
def test_bad_uploads_give_the_clis_one_line(tmp_path, text, expected):
    if text is None:  # a shipped file with one bad value
        text = _bad_kappa().encode()
    with pytest.raises(C.DashboardInputError) as info:
        C.scenario_from_upload("mine.toml", text)
    msg = str(info.value)
    assert msg.startswith("mine.toml: ") and expected in msg and "\n" not in msg
    if expected != "not a UTF-8 text file":  # the CLI reads the same file with the same words
        path = tmp_path / "mine.toml"
        path.write_bytes(text)
        with pytest.raises(Exception) as cli:
            load_scenario_or_exit(str(path))
        assert cli.value.message == f"{path}: " + msg.removeprefix("mine.toml: ")


def test_an_upload_equal_to_a_shipped_file_shares_its_cache_entry():
    data = (ROOT / "mfg/lp_exit/library/lp_types.toml").read_bytes()
    up = C.scenario_from_upload("copy.toml", data)
    assert C.scenario_key(up) == C.scenario_key(_scenario("lp_types"))
    with pytest.raises(C.DashboardInputError, match="at most"):
        C.scenario_from_upload("big.toml", b"#" * (C.MAX_UPLOAD_BYTES + 1))


# ----------------------------------------------------------------------------------
# the computation: progress, caches, cancel, downloads
# ----------------------------------------------------------------------------------


def _outcome(request):
    items = list(C.run(request))
    assert all(isinstance(i, C.Progress) for i in items[:-1])
    return items, items[-1]


def test_run_reports_progress_and_caches_equilibria_and_markets():
    sc = _scenario("lp_types")
    req = C.Request.make(sc, "lp_types", C.Shock(time=2008.5, liquidity_shift=-0.4, capital_cut=0.3), 200, 2, 3)
    items, out = _outcome(req)
    assert isinstance(out, C.Outcome), out
    assert [i.message.split(" ")[0] for i in items[:-1]] == ["solving", "simulating"]
    assert not out.equilibrium_cached and not out.simulation_cached
    assert out.simulation.n_agents == 200 and out.simulation.n_reps == 2
    assert out.equilibrium.converged and len(out.equilibrium.segments) == 2
    # again, and under another name with the same content: from the caches, no progress to report
    again = C.Request.make(C.scenario_from_upload("x.toml", (ROOT / "mfg/lp_exit/library/lp_types.toml")
                                                  .read_bytes()), "upload: x.toml", req.shock, 200, 2, 3)
    items2, out2 = _outcome(again)
    assert len(items2) == 1 and out2.equilibrium_cached and out2.simulation_cached
    assert out2.equilibrium is out.equilibrium
    # another N: the equilibrium from the cache, a new market
    _, out3 = _outcome(replace_n(req, 300))
    assert out3.equilibrium_cached and not out3.simulation_cached
    # a set cancel event stops the job before it computes anything
    cancel = threading.Event()
    cancel.set()
    assert not any(isinstance(i, C.Outcome) for i in C.run(replace_n(req, 400), cancel))


def replace_n(req, n):
    from dataclasses import replace

    return replace(req, n_agents=n)


def test_a_shock_the_solver_refuses_is_a_one_line_failure():
    sc = _scenario("lp_types")
    huge = C.Request.make(sc, "lp_types", C.Shock(time=2008.5, liquidity_shift=-1.0, share=2.0))
    (fail,) = list(C.run(huge))
    assert isinstance(fail, C.Failure) and "share of LPs hit" in fail.message and "\n" not in fail.message
    assert C.one_line(RuntimeError("boom\n  at line 3"), "x") == "x: RuntimeError: boom at line 3"


def test_lru_cache_evicts_the_least_recently_used():
    cache = C.LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)  # evicts b, the least recently used
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3
    value, hit = cache.get_or_compute("d", lambda: 4)
    assert (value, hit) == (4, False) and len(cache) == 2
    assert cache.get_or_compute("d", lambda: 5) == (4, True)


def test_downloads_exits_by_type_and_figures():
    from experiments.dashboard import figures as F

    sc = _scenario("crisis_2008")
    req = C.Request.make(sc, "crisis_2008", C.Shock(time=2008.75), 200, 2, 1)
    _, out = _outcome(req)
    n_t = out.equilibrium.t.size
    frame = C.paths_frame(out)
    assert (frame["source"] == "mfg").sum() == n_t and (frame["source"] == "finite_n").sum() == 2 * n_t
    for col in ("t", "price", "sell_flow", "withdrawn", "buyer_capital", "replication"):
        assert col in frame.columns
    back = pd.read_csv(io.BytesIO(C.paths_csv(out)))
    assert len(back) == 3 * n_t and np.allclose(back["price"], frame["price"])
    pq = pd.read_parquet(io.BytesIO(C.paths_parquet(out)))
    assert len(pq) == 3 * n_t and pq["replication"].isna().sum() == n_t
    eq = out.equilibrium
    by_type = C.exits_by_type(eq.model.populations, eq.flow, eq.dt)
    assert set(by_type) == {p.lp_type for p in eq.model.populations}
    assert sum(v[-1] for v in by_type.values()) == pytest.approx(float(np.sum(eq.sell_flow[:-1]) * eq.dt))
    assert [r[0] for r in C.summary_rows(out)][0].startswith("lowest price")
    png = F.panel(out, "density", density_type="pension")
    assert png.startswith(b"\x89PNG") and len(png) > 5_000


# ----------------------------------------------------------------------------------
# the command
# ----------------------------------------------------------------------------------


def test_gelav_help_does_not_import_solara():
    code = ("import sys; from click.testing import CliRunner; from experiments.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); assert 'dashboard' in r.output, r.output; "
            "assert 'solara' not in sys.modules, 'solara imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_dashboard_refuses_a_port_in_use():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = CliRunner().invoke(main, ["dashboard", "--port", str(port), "--no-browser"])
    assert result.exit_code == 2, result.output
    assert f"port {port} on 127.0.0.1 is in use" in result.output
    assert "Traceback" not in result.output


# ----------------------------------------------------------------------------------
# the page, in a headless Chromium
# ----------------------------------------------------------------------------------

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1500,1700")


def _which(*names):
    return next((p for p in map(shutil.which, names) if p), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(fn, timeout: float, what: str):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            value = fn()
            if value:
                return value
        except Exception as exc:  # the element is not there yet, or was just redrawn
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last!r})")


@pytest.mark.slow
def test_dashboard_in_a_browser(tmp_path):
    """Start the server, load the page, wait for the figures, move the shock's size, upload a bad and a good
    scenario file: the figures follow, errors are one line, no traceback; the server's process group is
    stopped in the end.  ``GELAV_DASHBOARD_SCREENSHOT=path`` also saves the screenshot there
    (docs/img/dashboard.png is made so)."""
    chromium = _which("chromium", "chromium-browser", "google-chrome")
    driver_path = _which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("Chromium or chromedriver is missing (CI installs Debian's chromium and chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    bad = tmp_path / "bad.toml"
    bad.write_text(_bad_kappa())
    small = tmp_path / "small.toml"
    small.write_text((ROOT / "mfg/lp_exit/library/lp_types.toml").read_text())
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    log = open(tmp_path / "server.log", "w")
    env = {**os.environ, "SOLARA_TELEMETRY_MIXPANEL_ENABLE": "False"}
    start = time.monotonic()
    server = subprocess.Popen([sys.executable, "-m", "experiments.cli", "dashboard", "--port", str(port),
                               "--no-browser"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True, env=env)
    driver = None
    try:
        def up():
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status == 200
        _wait(up, 60, "the server")
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for flag in CHROMIUM_FLAGS:
            opts.add_argument(flag)
        opts.add_argument(f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}")
        driver = webdriver.Chrome(service=Service(driver_path), options=opts)
        driver.get(url)

        def css(sel):
            return driver.find_element(By.CSS_SELECTOR, sel)

        def status():
            return css(".gelav-status").text

        def figure_src():
            return css("img.gelav-panel-price").get_attribute("src")

        def idle():
            return not driver.find_elements(By.CSS_SELECTOR, ".gelav-running")

        def no_error():
            body = css("body").text
            assert "Traceback" not in body and not driver.find_elements(By.CSS_SELECTOR, ".gelav-error"), body

        # first figures (the kernels' first compilation, if not cached, is in this wait)
        _wait(lambda: status() and figure_src() and idle(), 240, "the first figures")
        assert "shock_demo" in status() and "converged" in status()
        assert len(driver.find_elements(By.CSS_SELECTOR, "img[class*=gelav-panel-]")) == 6
        no_error()
        before, src0 = status(), figure_src()

        # the shock's size: a click in the middle of the slider (δ from 0 to -0.5)
        ActionChains(driver).move_to_element(css(".gelav-shock-size .v-slider")).click().perform()
        _wait(lambda: status() != before and "liquidity -0.50" in status() and idle(), 60, "the shocked figures")
        assert figure_src() != src0
        no_error()
        # the scenario's own events off: the dashboard's shock alone
        if "events (0)" not in css(".gelav-keep-events label").text:
            before, src0 = status(), figure_src()
            css(".gelav-keep-events label").click()
            _wait(lambda: status() != before and "· 1 event(s) in all" in status() and idle(), 60, "one event")
            assert figure_src() != src0
            no_error()
        shot = tmp_path / "dashboard.png"
        driver.save_screenshot(str(shot))

        # a bad upload: one line naming the file and the field; the figures stay
        css(".gelav-upload input[type=file]").send_keys(str(bad))
        err = _wait(lambda: css(".gelav-upload-error").text, 30, "the upload's error")
        assert re.match(r"bad\.toml: model\.populations\[0\] \(.+\)\.kappa: ", err) and "\n" not in err.strip()
        assert "Traceback" not in css("body").text

        # a good upload: selected, solved, drawn; the error is gone
        src1 = figure_src()
        css(".gelav-upload input[type=file]").send_keys(str(small))
        _wait(lambda: "upload: small.toml" in status() and idle(), 60, "the uploaded scenario's figures")
        assert figure_src() != src1 and not driver.find_elements(By.CSS_SELECTOR, ".gelav-upload-error")
        no_error()
        elapsed = time.monotonic() - start
        print(f"browser test: {elapsed:.1f} s")
        target = os.environ.get("GELAV_DASHBOARD_SCREENSHOT")
        if target:
            shutil.copyfile(shot, target)
    finally:
        if driver is not None:
            driver.quit()
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=15)
        log.close()
    with pytest.raises(ProcessLookupError):  # no orphan left in the server's process group
        os.killpg(server.pid, 0)
