"""Fuzz campaign: mutated scenarios, solved and simulated in child processes (no input may crash, hang
or silently corrupt; docs/model.md 3.1, 3.3).

    python benchmarks/fuzz_scenarios.py                 # 300 mutations (about 10 minutes on 2 cores)
    python benchmarks/fuzz_scenarios.py --n 50 --seed 3 --timeout 60

Each mutation sets one to three fields of a shipped scenario (the clearing market's calm cut to a
short window, or the impact market's calm, on a coarse grid) to a random value: huge, tiny, negative,
zero, NaN, infinite or plausible.  A child process validates it, solves it (``mfg.lp_exit.solve``)
and simulates its finite-N market (``abm.simulate``, 500 LPs), and reports one outcome per mutation:

* ``refused``: a ``pydantic.ValidationError`` whose message names a mutated field;
* ``finite``: a result whose every number is finite (price > 0);
* ``named error``: a ``FloatingPointError`` or ``MemoryError`` naming the step or the size;
* ``unnamed error``: any other exception (a defect: it names nothing);
* ``non-finite``: a result with a NaN or an infinity in it (a defect);
* ``crash``: the child died by a signal or exited without reporting (a defect);
* ``hang``: the child ran past ``--timeout`` (a defect).

A child handles mutations one after another and writes each outcome before the next starts, so a
crash costs one mutation, which is then reported, and a new child takes the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LIBRARY = ROOT / "mfg" / "lp_exit" / "library"
POP_FIELDS = ["kappa", "lbar", "sigma", "lam", "alpha", "eta", "ell", "y", "r", "g", "phi", "a_max", "initial_mean",
              "initial_std", "life", "weight", "delta"]
IMPACT_FIELDS = ["market.pbar", "market.beta", "market.tau_s", "market.K0", "market.Kbar", "market.theta_K",
                 "market.S0"]
CLEARING_FIELDS = ["market.pbar", "market.tau_d", "market.gamma", "market.P_cap", "market.K0", "market.Kbar",
                   "market.theta_K"]
GRID = {"L_min": -1.5, "L_max": 3.5, "n_L": 61, "dt": 1.0 / 12.0}
DEFECTS = ("unnamed error", "non-finite", "crash", "hang")


def base(kind: str) -> dict:
    with open(LIBRARY / ("calm.toml" if kind == "clearing" else "impact_calm.toml"), "rb") as fh:
        d = tomllib.load(fh)
    if kind == "clearing":  # a short window for speed
        d["model"]["end"] = d["model"]["start"] + 6.0
        d["model"]["populations"] = [p for p in d["model"]["populations"] if p["vintage"] < d["model"]["end"]][:8]
        d.pop("report", None)
    d["grid"] = dict(GRID)
    d["solver"]["max_iter"] = 25
    return d


def value(rng) -> float:
    kind = rng.integers(4)
    if kind == 0:
        return float(rng.choice([0.0, -0.0, 1e-300, -1e-300, 1e308, -1e308, float("nan"), float("inf"),
                                 -float("inf"), 1e6, -1e6, 1e3, -1e3]))
    if kind == 1:
        return float(10.0 ** rng.uniform(-8, 8) * rng.choice([-1, 1]))
    return float(rng.uniform(-3.0, 5.0))


def mutations(n: int, seed: int) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = "clearing" if i % 2 == 0 else "impact"
        fields = POP_FIELDS + (CLEARING_FIELDS if kind == "clearing" else IMPACT_FIELDS)
        picks = [(str(rng.choice(fields)), value(rng)) for _ in range(int(rng.integers(1, 4)))]
        if kind == "clearing" and rng.random() < 0.3:  # a shock on top, at the window's middle
            picks.append(("event", float(rng.uniform(-3.0, 1.0))))
        out.append({"id": i, "kind": kind, "mutations": picks})
    return out


def apply(d: dict, field: str, v: float) -> dict:
    if field == "event":
        t = d["model"]["start"] + 3.0
        d.setdefault("events", []).append({"time": t, "liquidity_shift": v, "capital_cut": 0.5})
    elif field.startswith("market."):
        d["model"]["market"][field.split(".", 1)[1]] = v
    else:
        for p in d["model"]["populations"]:
            p[field] = v
    return d


def run_one(case: dict) -> dict:
    """Validate, solve and simulate one mutation (in the child); returns its outcome."""
    import warnings

    import numpy as np
    import pydantic

    from abm import simulate
    from mfg.lp_exit import Scenario, solve
    from mfg.lp_exit.scenarios import solve_scenario

    d = base(case["kind"])
    for field, v in case["mutations"]:
        d = apply(d, field, v)
    try:
        sc = Scenario.model_validate(d)
    except pydantic.ValidationError as exc:
        text = str(exc)
        named = any(f.split(".")[-1] in text for f, _ in case["mutations"]) or "events" in text
        return {"outcome": "refused" if named else "unnamed error", "detail": text.splitlines()[0][:200]}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = (solve_scenario(sc.model, sc.grid, sc.solver, sc.events) if sc.events
                 else solve(sc.model, sc.grid, sc.solver))
            sim = simulate(sc, r, 500, 1, 1)
    except (FloatingPointError, MemoryError) as exc:
        text = str(exc)
        named = "step" in text or "GiB" in text
        return {"outcome": "named error" if named else "unnamed error", "detail": text[:200]}
    except Exception as exc:  # noqa: BLE001 - every other exception is the defect this campaign looks for
        return {"outcome": "unnamed error", "detail": f"{type(exc).__name__}: {exc}"[:200]}
    series = [r.price, r.buyer_capital, r.mean_liquidity, r.sell_flow, sim.price, sim.liquidity, sim.buyer_capital]
    finite = all(np.all(np.isfinite(a)) for a in series) and np.all(r.price > 0) and np.all(sim.price > 0)
    return {"outcome": "finite" if finite else "non-finite", "detail": f"min price {float(np.min(r.price)):.3g}"}


def child(cases_file: str, out_file: str) -> None:
    """Child mode: outcomes appended to ``out_file`` one JSON line per mutation (started, then done)."""
    cases = json.loads(Path(cases_file).read_text())
    with open(out_file, "a", encoding="utf-8") as fh:
        for case in cases:
            fh.write(json.dumps({"id": case["id"], "started": True}) + "\n")
            fh.flush()
            res = run_one(case)
            fh.write(json.dumps({"id": case["id"], **res}) + "\n")
            fh.flush()


def campaign(cases: list[dict], timeout: float) -> dict[int, dict]:
    """Run ``cases`` in children, restarting after a crash or a hang; every case gets an outcome."""
    results: dict[int, dict] = {}
    pending = list(cases)
    with tempfile.TemporaryDirectory() as tmp:
        while pending:
            cases_file, out_file = Path(tmp) / "cases.json", Path(tmp) / "out.jsonl"
            cases_file.write_text(json.dumps(pending))
            out_file.write_text("")
            proc = subprocess.Popen([sys.executable, __file__, "--child", str(cases_file), str(out_file)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            last_started, deadline = None, time.monotonic() + timeout
            while proc.poll() is None:
                lines = [json.loads(x) for x in out_file.read_text().splitlines() if x.strip()]
                started = [x["id"] for x in lines if x.get("started")]
                if started and started[-1] != last_started:
                    last_started, deadline = started[-1], time.monotonic() + timeout
                if time.monotonic() > deadline:
                    proc.kill()
                    break
                time.sleep(0.2)
            proc.wait()
            lines = [json.loads(x) for x in out_file.read_text().splitlines() if x.strip()]
            for x in lines:
                if "outcome" in x:
                    results[x["id"]] = x
            started = [x["id"] for x in lines if x.get("started")]
            if started and started[-1] not in results:  # the case in flight when the child died or hung
                hung = time.monotonic() > deadline
                results[started[-1]] = {"id": started[-1], "outcome": "hang" if hung else "crash",
                                        "detail": f"exit code {proc.returncode}"}
            pending = [c for c in pending if c["id"] not in results]
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="mutations")
    ap.add_argument("--seed", type=int, default=20261130)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds one mutation may take")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        child(*a.child)
        return 0
    cases = mutations(a.n, a.seed)
    t0 = time.perf_counter()
    results = campaign(cases, a.timeout)
    counts = Counter(r["outcome"] for r in results.values())
    print(f"# fuzz campaign: {a.n} mutations (seed {a.seed}), {time.perf_counter() - t0:.0f} s, "
          f"os.cpu_count()={os.cpu_count()}, load average {os.getloadavg()[0]:.2f}\n")
    print("| outcome | mutations |\n|---|---|")
    for k in ("refused", "finite", "named error", *DEFECTS):
        print(f"| {k} | {counts.get(k, 0)} |")
    bad = [(c, results[c["id"]]) for c in cases if results[c["id"]]["outcome"] in DEFECTS]
    for c, r in bad:
        print(f"DEFECT {r['outcome']}: {c['kind']} {c['mutations']}: {r['detail']}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
