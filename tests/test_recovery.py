"""Runs that recover cleanly, and sweeps that fail loudly (experiments/io.py, experiments/runner.py).

What a killed run leaves behind is removed by the next run in its folder; pool workers die
with their parent; a dead worker costs only its own task; two runs in one folder do not
both run; a sweep whose workers cannot load the task says so before any task runs.  The
runs are killed for real (SIGKILL, in subprocesses) at chosen points, so the tests are
deterministic; each takes a few seconds.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from _sweep_tasks import dying_block, toy_config
from click.testing import CliRunner

from experiments._demo_tasks import normal_block
from experiments.io import (
    LOCK_NAME,
    LOCK_WAIT_ENV,
    FolderBusy,
    _host_tag,
    atomic_path,
    folder_lock,
    remove_stale_temporaries,
    write_text,
)
from experiments.runner import MANIFEST_NAME, TASKS_DIR, run_sweep

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL, /proc and flock: Linux")

TESTS = Path(__file__).resolve().parent
PRELUDE = f"import sys\nsys.path.insert(0, {str(TESTS)!r})\n"  # scripts import _sweep_tasks like pytest does
SEED = 20261122
KEYS = [{"n": n, "block": b} for n in (10, 50) for b in range(3)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> pd.DataFrame:
    """The sweep of :data:`KEYS`, undisturbed, in this process."""
    return run_sweep(normal_block, KEYS, tmp_path_factory.mktemp("reference"), seed=SEED, executor="inprocess",
                     progress=False).frame


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# --------------------------------------------------------------------------- temporary files of killed runs


def test_only_the_temporaries_of_dead_processes_are_removed(tmp_path):
    with atomic_path(tmp_path / "x.csv") as tmp:  # the name carries the owner
        assert tmp.name.startswith(f".x.csv.gtmp-{os.getpid()}-{_host_tag()}-") and tmp.suffix == ".csv"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # dead, and not reaped until we wait for it
    try:
        def name(pid: int, host: str = _host_tag()) -> str:
            return f".data.parquet.gtmp-{pid}-{host}-abcd_123.parquet"

        gone = dead_pid()
        wait_until(lambda: not alive(zombie.pid), 30, "the zombie")
        dead = [tmp_path / name(gone), tmp_path / name(zombie.pid)]
        kept = [tmp_path / name(live.pid), tmp_path / name(os.getpid()),
                tmp_path / name(gone, "0badc0de"),  # another host: its processes cannot be seen from here
                tmp_path / ".data.parquet.abcd_123.parquet", tmp_path / ".hidden"]  # no owner: not ours to judge
        for p in [*dead, *kept]:
            p.write_bytes(b"partial")
        assert sorted(remove_stale_temporaries(tmp_path)) == sorted(dead)
        assert all(p.exists() for p in kept)
    finally:
        live.kill()
        live.wait()
        zombie.wait()
    # the first write of a process into a folder clears the folder's dead temporaries
    other = tmp_path / "other"
    other.mkdir()
    (other / name(gone)).write_bytes(b"partial")
    write_text(other / "summary.md", "x")
    assert [p.name for p in other.iterdir()] == ["summary.md"]


DATASET_KILLED_WHILE_WRITING = PRELUDE + """
import os, signal
from experiments.datasets import generate

def die(step, n_steps):
    if step == 40:
        os.kill(os.getpid(), signal.SIGKILL)

generate("crisis_2008", 500, 1, sys.argv[1], progress=die)
"""


def test_rerun_after_a_killed_dataset_run_leaves_no_temporary_files(tmp_path):
    from experiments.datasets import generate

    out = tmp_path / "dataset"
    proc = subprocess.run([sys.executable, "-c", DATASET_KILLED_WHILE_WRITING, str(out)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    debris = hidden(out)
    assert LOCK_NAME in debris and sum(n.startswith(".gelav-staging-") for n in debris) == 1  # the staging folder
    ds = generate("crisis_2008", 500, 1, out)
    assert hidden(out) == []
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in ds.files.values())


STUDY_KILLED_WHILE_WRITING = PRELUDE + """
import os, signal
import pyarrow.parquet as pq
from matplotlib.figure import Figure
from experiments.convergence import run_study
from _sweep_tasks import toy_config

def die_while_writing(path):
    with open(path, "wb") as f:
        f.write(b"partial")
    os.kill(os.getpid(), signal.SIGKILL)

if sys.argv[2] == "task":
    pq.write_table = lambda table, path, **kwargs: die_while_writing(path)
else:
    Figure.savefig = lambda self, path, **kwargs: die_while_writing(path)
run_study(toy_config(), sys.argv[1], executor="inprocess", progress=False, dpi=40)
"""


@pytest.mark.parametrize("killed_in", ["task", "figure"])
def test_rerun_after_a_killed_convergence_run_leaves_no_temporary_files(tmp_path, killed_in):
    from experiments.convergence import run_study

    out = tmp_path / "study"
    proc = subprocess.run([sys.executable, "-c", STUDY_KILLED_WHILE_WRITING, str(out), killed_in],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    where = out / TASKS_DIR if killed_in == "task" else out
    assert any(".gtmp-" in n for n in hidden(where)) and LOCK_NAME in hidden(out)
    res = run_study(toy_config(), out, executor="inprocess", progress=False, dpi=40)
    assert res.done + res.skipped == 3 and (out / "convergence.png").stat().st_size > 1000
    assert hidden(out) == [] and hidden(out / TASKS_DIR) == []


# --------------------------------------------------------------------------- pool workers


SLEEPY_SWEEP = PRELUDE + """
from experiments.runner import run_sweep
from _sweep_tasks import sleepy_block

if __name__ == "__main__":
    run_sweep(sleepy_block, [{"n": 10, "block": b} for b in range(4)], sys.argv[1], seed=1,
              params={"pid_dir": sys.argv[2]}, executor="processes", n_workers=2, progress=False)
"""


def test_pool_workers_die_with_their_killed_parent(tmp_path):
    script, pid_dir = tmp_path / "sweep.py", tmp_path / "pids"
    script.write_text(SLEEPY_SWEEP)
    pid_dir.mkdir()
    parent = subprocess.Popen([sys.executable, str(script), str(tmp_path / "sweep"), str(pid_dir)])
    workers: list[int] = []
    try:
        workers = wait_until(lambda: [int(p.stem) for p in pid_dir.glob("*.pid")] if len(list(pid_dir.iterdir()))
                             == 2 else None, 60, "two workers running a task")
        assert all(alive(w) for w in workers)
        parent.kill()  # SIGKILL: the parent cannot shut its pool down
        parent.wait()
        wait_until(lambda: not any(alive(w) for w in workers), 10, f"workers {workers} to die with their parent")
    finally:
        parent.kill()
        parent.wait()
        for w in workers:
            if alive(w):
                os.kill(w, signal.SIGKILL)


def test_a_worker_that_dies_once_costs_nothing(tmp_path, reference):
    once = tmp_path / "markers"
    once.mkdir()
    result = run_sweep(dying_block, KEYS, tmp_path / "sweep", seed=SEED, executor="processes", n_workers=2,
                       params={"die_on": [KEYS[1], KEYS[4]], "once_dir": str(once)}, progress=False)
    assert len(list(once.iterdir())) == 2  # two workers died, one task each
    assert (result.done, result.failed) == (len(KEYS), 0)
    pd.testing.assert_frame_equal(result.frame, reference, check_exact=True)


def test_a_task_that_kills_its_worker_every_time_fails_alone(tmp_path, reference):
    bad = KEYS[1]
    result = run_sweep(dying_block, KEYS, tmp_path / "sweep", seed=SEED, executor="processes", n_workers=2,
                       params={"die_on": [bad]}, progress=False)
    assert (result.done, result.failed) == (len(KEYS) - 1, 1)
    (failure,) = result.failures
    assert failure.key == bad
    assert "exited with code 3" in failure.error and "alone" in failure.error
    others = reference[~((reference.n == bad["n"]) & (reference.block == bad["block"]))].reset_index(drop=True)
    pd.testing.assert_frame_equal(result.frame, others, check_exact=True)


# --------------------------------------------------------------------------- one run per folder


HOLD_LOCK = """
import sys, time
from experiments.io import folder_lock

with folder_lock(sys.argv[1], what="the holder"):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold(folder: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder), str(seconds)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_run_in_a_busy_folder_refuses_naming_the_owner(tmp_path, monkeypatch):
    from experiments.cli import main
    from experiments.dataset_cli import dataset

    folder = tmp_path / "busy"
    holder = hold(folder, 60)
    try:
        owner = rf"in use by the holder \(pid {holder.pid} on host {re.escape(socket.gethostname())}, started "
        start = time.monotonic()
        with pytest.raises(FolderBusy, match=owner):
            run_sweep(normal_block, KEYS, folder, seed=SEED, executor="inprocess", progress=False)
        assert time.monotonic() - start < 2 and not (folder / MANIFEST_NAME).exists()
        # on the command line: one line, exit code 75 (EX_TEMPFAIL), before any work
        res = CliRunner().invoke(dataset, ["--scenario", "crisis_2008", "--n-lps", "500", "--out", str(folder)])
        assert res.exit_code == 75 and res.output.count("\n") == 1 and f"pid {holder.pid}" in res.output
        crisis = hold(tmp_path / "crisis" / "recovery", 60)  # a crisis experiment's folder is out/<name>/
        try:
            res = CliRunner().invoke(main, ["crisis", "recovery", "--quick", "--out", str(tmp_path / "crisis")])
            assert res.exit_code == 75 and res.output.count("\n") == 1 and f"pid {crisis.pid}" in res.output
        finally:
            crisis.kill()
            crisis.wait()
        monkeypatch.setenv(LOCK_WAIT_ENV, "0.5")  # wait half a second, then refuse
        start = time.monotonic()
        with pytest.raises(FolderBusy, match=owner):
            run_sweep(normal_block, KEYS, folder, seed=SEED, executor="inprocess", progress=False)
        assert time.monotonic() - start >= 0.5
        monkeypatch.setenv(LOCK_WAIT_ENV, "soon")
        with pytest.raises(ValueError, match=f"{LOCK_WAIT_ENV} must be a number of seconds"):
            run_sweep(normal_block, KEYS, folder, seed=SEED, executor="inprocess", progress=False)
        monkeypatch.delenv(LOCK_WAIT_ENV)
    finally:
        holder.kill()
        holder.wait()
    assert (folder / LOCK_NAME).exists()  # the killed holder's lock file stays, unlocked: it never blocks
    result = run_sweep(normal_block, KEYS, folder, seed=SEED, executor="inprocess", progress=False)
    assert result.done == len(KEYS) and hidden(folder) == []


def test_a_waiting_run_gets_the_folder_when_its_owner_finishes(tmp_path):
    folder = tmp_path / "busy"
    holder = hold(folder, 1.0)
    try:
        # the holder removes its lock file as it finishes: the waiter must lock the file at the path then
        with folder_lock(folder, wait=30):
            assert holder.poll() is not None or holder.wait(5) == 0
            with folder_lock(folder):  # reentrant in one thread (a study holds it around its sweep)
                pass
            refused = []
            thread = threading.Thread(target=lambda: refused.append(_try_lock(folder)))
            thread.start()
            thread.join()
            assert "another thread of this process" in refused[0]
        assert hidden(folder) == []
    finally:
        holder.kill()
        holder.wait()


def _try_lock(folder: Path) -> str:
    try:
        with folder_lock(folder):
            return "locked"
    except FolderBusy as exc:
        return str(exc)


# --------------------------------------------------------------------------- sweeps that fail loudly


_TASK = """
def task(key, rng):
    return {"x": rng.random()}
"""
_RUN = ("run_sweep(task, [{'i': i} for i in range(4)], sys.argv[1], seed=1, executor='processes', n_workers=2, "
        "progress=False)")
NO_GUARD = PRELUDE + "from experiments.runner import run_sweep\n" + _TASK + _RUN + "\n"
TASK_UNDER_GUARD = PRELUDE + "from experiments.runner import run_sweep\nif __name__ == '__main__':\n" + \
    "".join("    " + line + "\n" for line in _TASK.strip().splitlines()) + "    " + _RUN + "\n"
GUARDED = PRELUDE + "from experiments.runner import run_sweep\n" + _TASK + "if __name__ == '__main__':\n" + \
    "    r = " + _RUN + "\n    print(r.done, r.failed, len(r.frame))\n"


@pytest.mark.parametrize("script, code, message", [
    (NO_GUARD, 1, r"SweepConfigError: run_sweep\(executor='processes'\) is started by line \d+ of .*outside an "
                  r"`if __name__ == \"__main__\":` block"),
    (TASK_UNDER_GUARD, 1, r"SweepConfigError: worker processes cannot load the task __main__:task: AttributeError: "
                          r"Can't get attribute 'task'.*define the task function at the top level"),
    (GUARDED, 0, r"^4 0 4$"),
], ids=["no-main-guard", "task-under-the-guard", "guarded"])
def test_a_task_the_workers_cannot_load_is_refused_before_any_task_runs(tmp_path, script, code, message):
    path, folder = tmp_path / "script.py", tmp_path / "sweep"
    path.write_text(script)
    proc = subprocess.run([sys.executable, str(path), str(folder)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == code, proc.stderr
    assert re.search(message, proc.stderr if code else proc.stdout.strip(), re.MULTILINE), proc.stderr
    tasks = sorted((folder / TASKS_DIR).glob("*.parquet")) if folder.exists() else []
    assert len(tasks) == (4 if code == 0 else 0)
