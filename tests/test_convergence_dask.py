"""The convergence study on a local dask.distributed cluster gives the in-process study's results bit for bit."""

from __future__ import annotations

import pandas as pd
import pytest

from experiments import convergence as cv
from experiments.runner import read_sweep

pytest.importorskip("distributed")


def test_a_small_study_on_a_local_dask_cluster_matches_in_process_bit_for_bit(tmp_path):
    from test_epsilon_nash import TINY_CLEARING_TOML

    scenario = tmp_path / "tiny_clearing.toml"
    scenario.write_text(TINY_CLEARING_TOML)
    ns = (100, 300)
    config = cv.StudyConfig(
        models={"lp": ("experiments.convergence:lp_market", {"scenario": str(scenario), "epsilon": True}),
                "pf": ("experiments.convergence:price_formation_market",
                       {"test": 1, "rho": 0.05, "h": 0.1, "reference_size": 2000})},
        ns={"lp": ns, "pf": ns}, reps={"lp": {100: 6, 300: 5}, "pf": {100: 3, 300: 2}}, epsilon_reps={"lp": 4},
        task_seconds=1e-3, slope_range=(100, 300), n_boot=100, seed=13, label="dask")
    a = cv.run_study(config, tmp_path / "inprocess", executor="inprocess", progress=False, write=False)
    b = cv.run_study(config, tmp_path / "dask", executor="dask", n_workers=2, progress=False, write=False)
    assert b.done == a.done == len(cv.plan_tasks(config))
    fa, fb = read_sweep(tmp_path / "inprocess"), read_sweep(tmp_path / "dask")
    assert "eps_upper" in fa.columns and fa["eps_upper"].notna().any()
    pd.testing.assert_frame_equal(fa, fb, check_exact=True)
    pd.testing.assert_frame_equal(a.convergence, b.convergence, check_exact=True)
    pd.testing.assert_frame_equal(a.epsilon, b.epsilon, check_exact=True)
