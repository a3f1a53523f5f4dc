"""Tests of the resumable sweep runner (experiments/runner.py).

The task functions that worker processes run live in ``experiments/_demo_tasks.py`` (an
installed module, so spawned processes and Dask workers import them by name); in-process
sweeps also use functions defined here.  Every sweep is tiny (six tasks of a few hundred
normal draws): the tests check bookkeeping and bit-identity, not speed.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from experiments._demo_tasks import EXIT_AFTER_ENV, normal_block
from experiments.runner import (
    MANIFEST_NAME,
    TASKS_DIR,
    SweepConfigError,
    SweepFailedError,
    SweepTaskError,
    key_words,
    read_sweep,
    run_sweep,
    task_id,
    task_seed,
)

SEED = 20261122
KEYS = [{"n": n, "block": b} for n in (10, 50) for b in range(3)]


def sort_by_key(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["n", "block", "rep"], kind="stable").reset_index(drop=True)


def log_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> pd.DataFrame:
    """The sweep run in this process: the frame every other way of running must reproduce."""
    result = run_sweep(normal_block, KEYS, tmp_path_factory.mktemp("reference"), seed=SEED,
                       executor="inprocess", progress=False)
    assert (result.done, result.skipped, result.failed) == (len(KEYS), 0, 0)
    return result.frame


# --------------------------------------------------------------------------- seeds


def test_task_seed_is_a_stable_function_of_the_key():
    key = {"n": 10, "block": 0}
    # SHA-256 of the canonical JSON: the same in every process, whatever PYTHONHASHSEED
    assert key_words(key) == (1523879422, 1566726842, 3875178747, 3765082132)
    assert key_words({"block": 0, "n": 10}) == key_words(key)  # field order does not matter
    assert key_words({"n": np.int64(10), "block": np.int32(0)}) == key_words(key)
    assert key_words({"n": 10.0, "block": 0}) != key_words(key)  # 10 and 10.0 are different keys
    assert task_id(key) == "fe8dd45aba5a625d"
    ss = task_seed(SEED, key)
    assert ss.entropy == SEED and ss.spawn_key == key_words(key)
    a = np.random.default_rng(task_seed(SEED, key)).standard_normal(3)
    b = np.random.default_rng(task_seed(SEED, {"n": 10, "block": 1})).standard_normal(3)
    assert not np.array_equal(a, b)


# --------------------------------------------------------------------------- executors


def test_inprocess_layout_counts_and_manifest(tmp_path, reference):
    frame = reference
    assert list(frame.columns) == ["n", "block", "rep", "mean", "var"]
    assert len(frame) == 4 * len(KEYS)
    # rows follow the order of the keys given
    assert frame[["n", "block"]].drop_duplicates().to_dict("records") == KEYS
    # the task's own numbers: its Generator is default_rng(task_seed(SEED, key))
    draws = np.random.default_rng(task_seed(SEED, KEYS[4])).standard_normal((4, 50))
    rows = frame[(frame.n == 50) & (frame.block == 1)]
    np.testing.assert_array_equal(rows["mean"].to_numpy(), draws.mean(axis=1))

    # a SeedSequence instead of a Generator gives the task the same stream here
    result = run_sweep(normal_block, KEYS, tmp_path, seed=SEED, seed_as="seed_sequence",
                       executor="inprocess", progress=False)
    pd.testing.assert_frame_equal(result.frame, reference, check_exact=True)
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest["package"] == "gelav" and manifest["version"]
    assert manifest["configuration"]["task"] == "experiments._demo_tasks:normal_block"
    assert manifest["configuration"]["seed_entropy"] == SEED
    assert manifest["configuration"]["seed_as"] == "seed_sequence"
    assert [t["key"] for t in manifest["tasks"]] == KEYS
    assert [t["spawn_key"] for t in manifest["tasks"]] == [list(key_words(k)) for k in KEYS]
    assert sorted(p.name for p in (tmp_path / TASKS_DIR).iterdir()) == sorted(f"{task_id(k)}.parquet" for k in KEYS)
    pd.testing.assert_frame_equal(read_sweep(tmp_path), reference, check_exact=True)


def test_local_processes_give_bit_identical_results(tmp_path, reference):
    result = run_sweep(normal_block, KEYS, tmp_path, seed=SEED, executor="processes", n_workers=2, progress=False)
    assert (result.done, result.skipped, result.failed) == (len(KEYS), 0, 0)
    pd.testing.assert_frame_equal(result.frame, reference, check_exact=True)


def test_dask_gives_bit_identical_results(tmp_path, reference):
    distributed = pytest.importorskip("distributed")
    # the runner's own 2-worker LocalCluster (loopback)
    result = run_sweep(normal_block, KEYS, tmp_path / "own", seed=SEED, executor="dask", n_workers=2, progress=False)
    assert (result.done, result.skipped, result.failed) == (len(KEYS), 0, 0)
    pd.testing.assert_frame_equal(result.frame, reference, check_exact=True)
    # a running scheduler named by its address, with one worker this time
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        result = run_sweep(normal_block, KEYS, tmp_path / "scheduler", seed=SEED,
                           scheduler=cluster.scheduler_address, progress=False)
    assert (result.done, result.skipped, result.failed) == (len(KEYS), 0, 0)
    pd.testing.assert_frame_equal(result.frame, reference, check_exact=True)


def test_shuffled_task_order_gives_the_same_result_per_key(tmp_path, reference):
    shuffled = KEYS.copy()
    random.Random(7).shuffle(shuffled)
    assert shuffled != KEYS
    result = run_sweep(normal_block, shuffled, tmp_path, seed=SEED, executor="inprocess", progress=False)
    assert result.frame[["n", "block"]].drop_duplicates().to_dict("records") == shuffled
    pd.testing.assert_frame_equal(sort_by_key(result.frame), sort_by_key(reference), check_exact=True)
    # the configuration is the key *set*: running the original order in the same folder resumes
    again = run_sweep(normal_block, KEYS, tmp_path, seed=SEED, executor="inprocess", progress=False)
    assert (again.done, again.skipped) == (0, len(KEYS))
    pd.testing.assert_frame_equal(again.frame, reference, check_exact=True)


# --------------------------------------------------------------------------- resumption


def test_killed_sweep_resumes_without_recomputing_finished_tasks(tmp_path, reference):
    folder, log = tmp_path / "sweep", tmp_path / "calls.log"
    k = 3
    code = (
        "from experiments.runner import run_sweep\n"
        "from experiments._demo_tasks import normal_block\n"
        f"run_sweep(normal_block, {KEYS!r}, {str(folder)!r}, seed={SEED}, params={{'log': {str(log)!r}}},\n"
        "          executor='inprocess', progress=False)\n"
        "raise SystemExit('the sweep was not killed')\n"
    )
    # the (k+1)-th task ends the whole process with os._exit(3): no cleanup, no finally blocks
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, EXIT_AFTER_ENV: str(k)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert log_lines(log) == KEYS[:k]
    assert len(list((folder / TASKS_DIR).glob("*.parquet"))) == k

    result = run_sweep(normal_block, KEYS, folder, params={"log": str(log)}, executor="inprocess", progress=False)
    assert (result.done, result.skipped, result.failed) == (len(KEYS) - k, k, 0)
    calls = log_lines(log)
    canon = lambda keys: sorted(json.dumps(k, sort_keys=True) for k in keys)  # noqa: E731
    assert canon(calls) == canon(KEYS)  # every task ran exactly once
    # seed=None took the recorded entropy; the interrupted sweep equals an uninterrupted one
    pd.testing.assert_frame_equal(result.frame, reference, check_exact=True)


# --------------------------------------------------------------------------- failures


def test_failing_task_is_reported_with_its_key_and_the_others_are_kept(tmp_path, reference):
    bad = {"n": 50, "block": 1}
    params = {"fail_on": [bad]}
    result = run_sweep(normal_block, KEYS, tmp_path, seed=SEED, params=params, executor="processes",
                       n_workers=2, progress=False)
    assert (result.done, result.skipped, result.failed) == (len(KEYS) - 1, 0, 1)
    assert not result.complete
    (failure,) = result.failures
    assert failure.key == bad and failure.task_id == task_id(bad)
    assert failure.error == f"ValueError: planned failure for key {bad}"
    assert "Traceback" in failure.traceback and "normal_block" in failure.traceback
    expected = reference[~((reference.n == 50) & (reference.block == 1))].reset_index(drop=True)
    pd.testing.assert_frame_equal(result.frame, expected, check_exact=True)
    assert not (tmp_path / TASKS_DIR / f"{task_id(bad)}.parquet").exists()
    recorded = json.loads((tmp_path / "failures.json").read_text())
    assert [f["key"] for f in recorded] == [bad]

    # a re-run retries only the failed task
    again = run_sweep(normal_block, KEYS, tmp_path, seed=SEED, params=params, executor="inprocess", progress=False)
    assert (again.done, again.skipped, again.failed) == (0, len(KEYS) - 1, 1)


def test_fail_fast_stops_at_the_first_failure_and_keeps_finished_tasks(tmp_path):
    bad = KEYS[2]
    with pytest.raises(SweepTaskError, match="planned failure") as info:
        run_sweep(normal_block, KEYS, tmp_path, seed=SEED, params={"fail_on": [bad]}, executor="inprocess",
                  fail_fast=True, progress=False)
    assert info.value.failure.key == bad
    assert sorted(p.stem for p in (tmp_path / TASKS_DIR).glob("*.parquet")) == sorted(task_id(k) for k in KEYS[:2])


def test_sweep_whose_every_worker_dies_raises_with_the_cause(tmp_path, monkeypatch):
    log = tmp_path / "calls.log"
    log.touch()
    monkeypatch.setenv(EXIT_AFTER_ENV, "0")  # every task's worker process exits at once
    with pytest.raises(SweepFailedError, match="all 2 tasks of the sweep failed") as info:
        run_sweep(normal_block, KEYS[:2], tmp_path / "sweep", seed=SEED, params={"log": str(log)},
                  executor="processes", n_workers=2, progress=False)
    # each task was retried alone once, and its own process died the same way
    assert len(info.value.failures) == 2
    assert all("exited with code 3" in f.error and "alone" in f.error for f in info.value.failures)
    assert "exited with code 3" in str(info.value)
    recorded = json.loads((tmp_path / "sweep" / "failures.json").read_text())
    assert sorted(json.dumps(f["key"]) for f in recorded) == sorted(json.dumps(k) for k in KEYS[:2])


def frame_task(key, rng):
    return pd.DataFrame({"x": rng.random(2)}, index=[10, 11])


def scalar_task(key, rng):
    return {"x": float(rng.random()), "label": "one row"}


def clashing_task(key, rng):
    return {"n": [1, 2]}


def list_task(key, rng):
    return [1, 2, 3]


def object_task(key, rng):
    return {"x": [object(), object()]}


def test_task_outputs_dataframe_or_dict_and_bad_outputs_are_failures(tmp_path):
    keys = KEYS[:2]
    opts = dict(seed=1, executor="inprocess", progress=False)
    frame = run_sweep(frame_task, keys, tmp_path / "f", **opts).frame
    assert list(frame.columns) == ["n", "block", "x"] and list(frame.index) == [0, 1, 2, 3]
    one_row = run_sweep(scalar_task, keys, tmp_path / "s", **opts).frame
    assert list(one_row.columns) == ["n", "block", "x", "label"] and len(one_row) == 2
    # every task fails: the sweep raises with the first task's own error in the message
    for bad, folder, what in ((clashing_task, "c", "also key fields"), (list_task, "w", "DataFrame or a dict"),
                              (object_task, "o", "object")):  # object: Parquet cannot store it
        with pytest.raises(SweepFailedError, match=what) as info:
            run_sweep(bad, keys, tmp_path / folder, **opts)
        assert len(info.value.failures) == 2 and what in info.value.failure.error


# --------------------------------------------------------------------------- configuration


def test_different_configuration_in_the_same_folder_is_refused(tmp_path, reference):
    run_sweep(normal_block, KEYS, tmp_path, seed=SEED, executor="inprocess", progress=False)
    with pytest.raises(SweepConfigError, match=r"params: recorded \{\}, now \{'reps': 5\}"):
        run_sweep(normal_block, KEYS, tmp_path, seed=SEED, params={"reps": 5}, progress=False)
    with pytest.raises(SweepConfigError, match=f"seed_entropy: recorded {SEED}, now 1"):
        run_sweep(normal_block, KEYS, tmp_path, seed=1, progress=False)
    with pytest.raises(SweepConfigError, match="1 keys of this sweep were not recorded"):
        run_sweep(normal_block, KEYS + [{"n": 10, "block": 3}], tmp_path, seed=SEED, progress=False)
    with pytest.raises(SweepConfigError, match="task: recorded 'experiments._demo_tasks:normal_block'"):
        run_sweep(frame_task, KEYS, tmp_path, seed=SEED, progress=False)
    # nothing was touched; overwrite=True discards the earlier sweep
    pd.testing.assert_frame_equal(read_sweep(tmp_path), reference, check_exact=True)
    result = run_sweep(normal_block, KEYS[:2], tmp_path, seed=1, params={"reps": 2}, overwrite=True,
                       executor="inprocess", progress=False)
    assert (result.done, result.skipped) == (2, 0) and len(result.frame) == 4
    assert len(list((tmp_path / TASKS_DIR).glob("*.parquet"))) == 2
    assert json.loads((tmp_path / MANIFEST_NAME).read_text())["configuration"]["params"] == {"reps": 2}


def test_bad_input_is_refused_with_a_clear_error(tmp_path):
    def run(keys=KEYS, **kw):
        return run_sweep(normal_block, keys, tmp_path, **{"seed": SEED, "progress": False, **kw})

    with pytest.raises(ValueError, match=r"keys\[1\] = .* repeats keys\[0\]"):
        run([{"n": 1}, {"n": 1}])
    with pytest.raises(ValueError, match=r"keys\[1\] has fields \['m'\]"):
        run([{"n": 1}, {"m": 1}])
    with pytest.raises(ValueError, match=r"keys\[0\] field 'n' must be finite"):
        run([{"n": float("nan")}])
    with pytest.raises(TypeError, match=r"keys\[0\] field 'n' must be a bool, int, float or str"):
        run([{"n": [1, 2]}])
    with pytest.raises(ValueError, match="keys is empty"):
        run([])
    with pytest.raises(TypeError, match=r"params\['f'\] is a builtin_function_or_method, which cannot be recorded"):
        run(params={"f": len})
    with pytest.raises(ValueError, match="seed must be non-negative"):
        run(seed=-1)
    with pytest.raises(ValueError, match="executor must be one of"):
        run(executor="threads")
    with pytest.raises(ValueError, match="needs executor='dask'"):
        run(executor="processes", scheduler="tcp://127.0.0.1:8786")
    with pytest.raises(ValueError, match="lambda or a nested function"):
        run_sweep(lambda key, rng: {"x": 1}, KEYS, tmp_path, executor="processes", progress=False)
    assert not (tmp_path / MANIFEST_NAME).exists()  # refused before anything was written


def test_progress_bar_only_when_asked_or_on_a_terminal(tmp_path, capsys):
    run_sweep(normal_block, KEYS[:2], tmp_path / "quiet", seed=SEED, executor="inprocess")
    assert capsys.readouterr().err == ""  # stderr is not a terminal under pytest
    run_sweep(normal_block, KEYS[:2], tmp_path / "bar", seed=SEED, executor="inprocess", progress=True)
    err = capsys.readouterr().err
    assert "2/2" in err and "task" in err
