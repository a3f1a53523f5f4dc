"""Resumable Monte Carlo sweeps: run a task per key, seeded by its key, written as it finishes.

A *sweep* is a list of task keys (small dicts of scalars, e.g. ``{"n": 100, "block": 3}``)
and a *task function* ``task(key, seed, **params)`` that returns a pandas DataFrame (or a
dict of columns).  :func:`run_sweep` runs every task once and returns the concatenated
results with the key columns added.

Reproducibility
    Each task is seeded by ``SeedSequence(entropy, spawn_key=key_words(key))``: the sweep's
    seed entropy and four 32-bit words of the SHA-256 of the key's canonical JSON (sorted
    field names).  A task's random numbers therefore depend on nothing but the sweep seed
    and its own key: not on the executor, the number of workers, the order of the keys, or
    which other tasks are in the sweep.

Resumption
    The sweep's folder holds ``manifest.json`` (configuration, package version, seed
    entropy, each task's key and seed) and one Parquet file per finished task
    (``tasks/<task id>.parquet``), each written atomically by the driver as soon as the
    task returns.  Running the same sweep again skips the tasks whose file exists, so a
    killed sweep resumes without recomputing finished work.  Running a *different* sweep
    (other task function, parameters, seed or key set) in the same folder is refused
    unless ``overwrite=True``.  One run per folder at a time: a sweep holds the folder's
    lock (:func:`experiments.io.folder_lock`), and a second run in the same folder refuses
    at once, naming the first (a killed run's lock never blocks).  The temporary files of
    a killed run are removed by the next.

Executors
    ``"inprocess"`` (a loop in this process), ``"processes"`` (``ProcessPoolExecutor`` with an
    explicit ``multiprocessing`` context, ``"spawn"`` by default: Mesa sets the process-wide
    start method to spawn, and spawn is safe with numba's and pandas' threads) and
    ``"dask"`` (a loopback ``LocalCluster`` of worker processes, or a running scheduler named
    by ``scheduler="ADDRESS"``).  With processes and Dask the task function must be an
    importable top-level callable (not a lambda or a function defined inside another);
    with processes this is checked before any task runs (a probe loads the task in a
    worker, and a script that would start the sweep again in every worker is refused), and
    a misconfigured sweep raises :class:`SweepConfigError` saying what to change.

Failures
    A task that raises is a failure (its key and traceback in ``failures.json``); the other
    tasks go on.  A pool worker that dies (killed, out of memory, ``os._exit``) costs only
    its own task: the tasks that were running in the pool are retried each in a process
    of its own, the rest go on in a fresh pool, and a task whose process dies again is a
    failure naming how it died.  Pool workers die with the sweep's process.  A sweep in
    which every task failed raises :class:`SweepFailedError` with the first error.
"""

from __future__ import annotations

import ast
import collections
import concurrent.futures
import ctypes
import functools
import hashlib
import inspect
import json
import math
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import traceback
import uuid
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from .io import atomic_path, folder_lock, remove_stale_temporaries, write_text

__all__ = [
    "run_sweep",
    "read_sweep",
    "task_id",
    "task_seed",
    "key_words",
    "SweepResult",
    "TaskFailure",
    "SweepConfigError",
    "SweepTaskError",
    "SweepFailedError",
    "MANIFEST_NAME",
    "TASKS_DIR",
]

MANIFEST_NAME = "manifest.json"
FAILURES_NAME = "failures.json"
TASKS_DIR = "tasks"
MANIFEST_FORMAT = 1
EXECUTORS = ("auto", "inprocess", "processes", "dask")
SEED_AS = ("generator", "seed_sequence")

Key = dict[str, Any]


class SweepConfigError(ValueError):
    """The sweep cannot run as configured: the folder holds a sweep with another configuration
    (or stray files), or worker processes cannot load the task."""


class SweepTaskError(RuntimeError):
    """A task raised and ``fail_fast=True`` stopped the sweep; ``.failure`` has its key and traceback."""

    def __init__(self, failure: "TaskFailure") -> None:
        self.failure = failure
        super().__init__(f"task {failure.key} failed ({failure.error}); finished tasks are kept.\n{failure.traceback}")


class SweepFailedError(SweepTaskError):
    """Every task of the sweep failed: ``.failures`` lists them, ``.failure`` is the first."""

    def __init__(self, failures: Sequence["TaskFailure"], folder: Path) -> None:
        self.failure = failures[0]
        self.failures = tuple(failures)
        f = self.failure
        RuntimeError.__init__(self, f"all {len(failures)} tasks of the sweep failed (each one is in "
                                    f"{folder / FAILURES_NAME}); the first, task {f.key}: {f.error}\n{f.traceback}")


@dataclass(frozen=True)
class TaskFailure:
    """A task that raised (or whose worker died): its key, id, error line and traceback text."""

    key: Key
    task_id: str
    error: str
    traceback: str


@dataclass(frozen=True)
class SweepResult:
    """Outcome of :func:`run_sweep`.

    Attributes
    ----------
    frame : results of every finished task (this run's and earlier runs'), key columns
        first, tasks in the order of the ``keys`` given to :func:`run_sweep`.
    done : tasks computed in this run.
    skipped : tasks already finished in the folder, not recomputed.
    failed : tasks that raised in this run (their results are missing from ``frame``).
    failures : one :class:`TaskFailure` per failed task.
    folder : the sweep folder.
    """

    frame: pd.DataFrame
    done: int
    skipped: int
    failed: int
    failures: tuple[TaskFailure, ...] = ()
    folder: Path | None = None

    @property
    def complete(self) -> bool:
        """True when every task of the sweep has a result."""
        return self.failed == 0

    def __repr__(self) -> str:
        return (f"SweepResult(done={self.done}, skipped={self.skipped}, failed={self.failed}, "
                f"rows={len(self.frame)}, folder={str(self.folder)!r})")


# --------------------------------------------------------------------------- keys and seeds


def _scalar(value: Any, where: str) -> bool | int | float | str:
    """``value`` as a plain JSON scalar (numpy scalars converted), or a clear error."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"{where} must be finite, got {v}")
        return v
    if isinstance(value, str):
        return value
    raise TypeError(f"{where} must be a bool, int, float or str, got {type(value).__name__} ({value!r})")


def _normalise_key(key: Mapping[str, Any], where: str = "task key") -> Key:
    """A task key as a plain dict of JSON scalars, field order kept; checked."""
    if not isinstance(key, Mapping):
        raise TypeError(f"{where} must be a mapping of field name to scalar, got {type(key).__name__}")
    if not key:
        raise ValueError(f"{where} is empty; a key needs at least one field")
    out: Key = {}
    for name, value in key.items():
        if not (isinstance(name, str) and name):
            raise TypeError(f"{where} field names must be non-empty strings, got {name!r}")
        out[name] = _scalar(value, f"{where} field {name!r}")
    return out


def _canonical(key: Mapping[str, Any]) -> str:
    return json.dumps(key, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def key_words(key: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """Four 32-bit words of SHA-256 of the key's canonical JSON (sorted field names).

    Stable across Python processes and versions (unlike the salted built-in ``hash``) and
    independent of the key's field order; ``1`` and ``1.0`` are different keys.
    """
    digest = hashlib.sha256(_canonical(_normalise_key(key)).encode("ascii")).digest()
    return tuple(int.from_bytes(digest[4 * i: 4 * i + 4], "little") for i in range(4))  # type: ignore[return-value]


def task_id(key: Mapping[str, Any]) -> str:
    """The task's file stem: 16 hex digits of SHA-256 of the key's canonical JSON."""
    return hashlib.sha256(_canonical(_normalise_key(key)).encode("ascii")).hexdigest()[:16]


def task_seed(entropy: int | Sequence[int], key: Mapping[str, Any]) -> np.random.SeedSequence:
    """The task's ``SeedSequence``: the sweep's ``entropy`` with ``spawn_key = key_words(key)``."""
    return np.random.SeedSequence(entropy, spawn_key=key_words(key))


def _normalise_keys(keys: Iterable[Mapping[str, Any]]) -> list[Key]:
    if isinstance(keys, Mapping) or isinstance(keys, (str, bytes)):
        raise TypeError("keys must be a sequence of task keys (dicts), not a single mapping or string")
    out = [_normalise_key(k, f"keys[{i}]") for i, k in enumerate(keys)]
    if not out:
        raise ValueError("keys is empty: a sweep needs at least one task")
    names = list(out[0])
    seen: dict[str, int] = {}
    for i, k in enumerate(out):
        if set(k) != set(names):
            raise ValueError(f"keys[{i}] has fields {sorted(k)}, but keys[0] has {sorted(names)}; "
                             "every task key needs the same field names")
        c = _canonical(k)
        if c in seen:
            raise ValueError(f"keys[{i}] = {k} repeats keys[{seen[c]}]; task keys must be distinct")
        seen[c] = i
    return [{name: k[name] for name in names} for k in out]


def _resolve_entropy(seed: Any, recorded: Any) -> int | list[int]:
    """The sweep's seed entropy from ``seed`` (int, ints, SeedSequence or None)."""
    if seed is None:
        if recorded is not None:
            return recorded
        return int(np.random.SeedSequence().entropy)
    if isinstance(seed, np.random.SeedSequence):
        if seed.spawn_key:
            raise ValueError("seed: pass a root SeedSequence (empty spawn_key); tasks are spawned from it by key")
        seed = seed.entropy
    if isinstance(seed, (bool, np.bool_)):
        raise TypeError("seed must be a non-negative int, a sequence of them, a SeedSequence or None, got a bool")
    if isinstance(seed, (int, np.integer)):
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        return int(seed)
    try:
        words = [int(w) for w in seed]
    except TypeError:
        raise TypeError(f"seed must be a non-negative int, a sequence of them, a SeedSequence or None, "
                        f"got {type(seed).__name__}") from None
    if not words or any(w < 0 for w in words):
        raise ValueError(f"seed must be a non-empty sequence of non-negative ints, got {seed!r}")
    return words


# --------------------------------------------------------------------------- configuration


def _jsonable(value: Any, where: str) -> Any:
    """``value`` as JSON data for the manifest (tuples become lists), or an error naming it."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float, np.integer, np.floating, np.bool_)):
        return _scalar(value, where)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist(), where)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} has a non-string key {k!r}; parameters are recorded as JSON")
            out[k] = _jsonable(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{where} is a {type(value).__name__}, which cannot be recorded in the manifest; "
                    "pass JSON-like parameters (numbers, strings, lists, dicts) and build objects inside the task")


def _task_name(task: Callable) -> str:
    if not callable(task):
        raise TypeError(f"task must be callable, got {type(task).__name__}")
    module = getattr(task, "__module__", None)
    qualname = getattr(task, "__qualname__", None)
    if module is None or qualname is None:  # functools.partial, callable instances
        module, qualname = type(task).__module__, type(task).__qualname__
    return f"{module}:{qualname}"


def _check_importable(task: Callable, executor: str) -> None:
    qualname = getattr(task, "__qualname__", "")
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise ValueError(f"task {_task_name(task)} is a lambda or a nested function; executor={executor!r} "
                         "needs a top-level function that worker processes can import (or use executor='inprocess')")
    if executor == "processes" and getattr(task, "__module__", None) == "__main__":
        main = sys.modules.get("__main__")
        if getattr(main, "__file__", None) is None:
            raise ValueError(f"task {_task_name(task)} is defined in an interactive session; spawned worker "
                             "processes cannot import it: put it in a module (or use executor='inprocess' or 'dask')")


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gelav")
    except PackageNotFoundError:
        return "unknown"


def _config_differences(recorded: Mapping[str, Any], current: Mapping[str, Any],
                        recorded_keys: list[Key], current_keys: list[Key]) -> list[str]:
    """Lines naming each configuration field, and the key set, that differ."""
    lines = [f"{name}: recorded {recorded.get(name)!r}, now {current.get(name)!r}"
             for name in sorted(set(recorded) | set(current)) if recorded.get(name) != current.get(name)]
    ra = {_canonical(k) for k in recorded_keys}
    rb = {_canonical(k) for k in current_keys}
    if ra != rb:
        lines.append(f"task keys differ: {len(ra - rb)} recorded keys are not in this sweep "
                     f"(e.g. {next(iter(sorted(ra - rb)), '-')}), {len(rb - ra)} keys of this sweep were not "
                     f"recorded (e.g. {next(iter(sorted(rb - ra)), '-')})")
    return lines


def _manifest_text(record: Mapping[str, Any]) -> str:
    """The manifest as indented JSON with one line per task."""
    head = json.dumps({k: v for k, v in record.items() if k != "tasks"}, indent=1)
    tasks = ",\n".join("  " + json.dumps(t) for t in record["tasks"])
    return head[:-2] + ',\n "tasks": [\n' + tasks + "\n ]\n}\n"


def _read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SweepConfigError(f"{path} is not valid JSON ({exc}); remove it or pass overwrite=True") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT or "configuration" not in manifest:
        raise SweepConfigError(f"{path} is not a gelav sweep manifest (format {MANIFEST_FORMAT}); "
                               "use another folder or overwrite=True")
    return manifest


def _clear(folder: Path) -> None:
    """Remove the runner's own files from ``folder`` (manifest, failures, task results)."""
    for name in (MANIFEST_NAME, FAILURES_NAME):
        (folder / name).unlink(missing_ok=True)
    tasks = folder / TASKS_DIR
    if tasks.is_dir():
        for p in tasks.iterdir():
            if p.suffix == ".parquet" and p.is_file():
                p.unlink()


# --------------------------------------------------------------------------- running one task


@dataclass(frozen=True)
class _Outcome:
    table: Any = None  # pyarrow.Table of the task's frame, key columns first; None on failure
    error: str = ""
    traceback: str = ""


def _as_frame(out: Any, key: Key) -> pd.DataFrame:
    """The task's return value as a DataFrame (fresh index) with the key columns first."""
    if isinstance(out, pd.DataFrame):
        frame = out.reset_index(drop=True)
    elif isinstance(out, Mapping):
        cols = dict(out)
        if cols and all(np.ndim(v) == 0 for v in cols.values()):
            frame = pd.DataFrame({k: [v] for k, v in cols.items()})
        else:
            frame = pd.DataFrame(cols)
    else:
        raise TypeError(f"the task returned {type(out).__name__}; it must return a pandas DataFrame or a dict "
                        "of columns")
    clash = [name for name in key if name in frame.columns]
    if clash:
        raise ValueError(f"the task's output has columns {clash} that are also key fields; rename them")
    frame.columns = [str(c) for c in frame.columns]
    for pos, (name, value) in enumerate(key.items()):
        frame.insert(pos, name, value)
    return frame


def _execute(task: Callable, key: Key, entropy: Any, seed_as: str, params: Mapping[str, Any]) -> _Outcome:
    """Run one task (in whatever process) and convert its output to Arrow there, so that an
    output Parquet cannot store is a failure of that task; an exception becomes an outcome
    with its traceback."""
    import pyarrow as pa

    try:
        ss = task_seed(entropy, key)
        seed = np.random.default_rng(ss) if seed_as == "generator" else ss
        frame = _as_frame(task(dict(key), seed, **params), key)
        return _Outcome(table=pa.Table.from_pandas(frame, preserve_index=False))
    except Exception as exc:  # noqa: BLE001 - reported with the task's key, the sweep goes on
        return _Outcome(error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())


def _crash(exc: BaseException) -> _Outcome:
    """Outcome for a task whose worker failed outside the task (pool broken, worker killed)."""
    return _Outcome(error=f"{type(exc).__name__}: {exc}",
                    traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))


# --------------------------------------------------------------------------- executors

# A job is (key, task id); each executor yields (key, task id, outcome) as tasks finish.
Job = tuple[Key, str]


def _run_inprocess(task, jobs, entropy, seed_as, params) -> Iterator[tuple[Key, str, _Outcome]]:
    for key, tid in jobs:
        yield key, tid, _execute(task, key, entropy, seed_as, params)


# --------------------------------------------------------------------------- worker processes

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_PARENT_POLL_S = 1.0


def _die_with_parent(parent_pid: int | None) -> None:
    """Initializer of every worker process: the worker ends when the sweep's process dies.

    A killed driver (SIGKILL, out of memory) cannot shut its pool down, and its workers would
    run on, each with its memory.  On Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` has the kernel
    kill the worker when its parent dies.  The kernel's "parent" is the *thread* that created
    the worker, not the process: the workers are started by ``submit`` (and by
    ``Process.start``) in the thread that runs :func:`run_sweep`, and the pool is shut down
    before ``run_sweep`` returns, so that thread outlives the workers (after an early stop,
    ``fail_fast`` or an interrupt, a worker may still finish its task: should the thread end
    then, the worker is killed, which loses nothing the sweep still wanted).  Everywhere (and
    in case prctl is missing) a daemon thread polls
    ``os.getppid()`` and ends the worker once it changes, i.e. once the worker was
    re-parented; it needs the GIL, so a task inside a long GIL-holding call notices late.

    ``parent_pid``: the driver's PID when the workers are its children (spawn, fork), checked
    here against a parent that died before prctl took effect; None with forkserver, whose
    workers are children of the fork server (which exits when the driver dies).
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # a libc without prctl: the thread below remains
            pass
    ppid = os.getppid()
    if parent_pid is not None and ppid != parent_pid:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(ppid,), name="gelav-parent-watch", daemon=True).start()


def _watch_parent(ppid: int) -> None:
    """End this process as soon as its parent is no longer ``ppid``."""
    while os.getppid() == ppid:
        time.sleep(_PARENT_POLL_S)
    os._exit(1)


def _is_main_guard(node: ast.stmt) -> bool:
    """``if __name__ == "__main__":`` (either side, possibly inside a larger condition)."""
    if not isinstance(node, ast.If):
        return False
    for cmp in ast.walk(node.test):
        if isinstance(cmp, ast.Compare):
            parts = [cmp.left, *cmp.comparators]
            if any(isinstance(p, ast.Name) and p.id == "__name__" for p in parts) and \
                    any(isinstance(p, ast.Constant) and p.value == "__main__" for p in parts):
                return True
    return False


def _check_main_guard(start_method: str) -> None:
    """Refuse a processes sweep started by a script's top-level code outside its main guard.

    With spawn and forkserver each worker runs the main script again when it starts (as module
    ``__mp_main__``): a sweep started outside ``if __name__ == "__main__":`` would start again
    in every worker, which dies on it, and every task would fail.  The calling frames give the
    script's line that started the sweep; the script's source tells whether that line is under
    a guard.  Where the source cannot be read, the probe of :func:`_probe_pool` catches it.
    """
    if start_method == "fork":
        return
    frame = inspect.currentframe()
    while frame is not None and not (frame.f_code.co_name == "<module>"
                                     and frame.f_globals.get("__name__") in ("__main__", "__mp_main__")):
        frame = frame.f_back
    if frame is None:
        return
    path, line = frame.f_code.co_filename, frame.f_lineno
    fix = ("put the code that starts the sweep under `if __name__ == \"__main__\":` and define the task function "
           "at the top level of the script or, better, in an importable module (or use executor='inprocess')")
    if frame.f_globals["__name__"] == "__mp_main__":
        raise SweepConfigError(f"run_sweep was called by a worker process while it imported the main script "
                               f"({path}, line {line}); {fix}")
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file is None or os.path.realpath(main_file) != os.path.realpath(path):
        return
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return
    # any enclosing guard will do (the statement may sit in a try or with block at the top level)
    if not any(_is_main_guard(node) and node.body[0].lineno <= line <= (node.body[-1].end_lineno or line)
               for node in ast.walk(tree)):
        raise SweepConfigError(
            f"run_sweep(executor='processes') is started by line {line} of {path} outside an "
            f"`if __name__ == \"__main__\":` block: each worker process ({start_method} start method) runs "
            f"the script again when it starts, would start the sweep again and die, and every task would "
            f"fail; {fix}")


def _load_task(blob: bytes) -> str:
    """The probe, in a worker: unpickle the task as the tasks will; '' or the error."""
    try:
        pickle.loads(blob)
    except Exception as exc:  # noqa: BLE001 - the driver reports it as a configuration error
        return f"{type(exc).__name__}: {exc}"
    return ""


def _probe_pool(pool: concurrent.futures.ProcessPoolExecutor, task: Callable, start_method: str) -> None:
    """Have one worker load ``task`` before any task is submitted; a failure is a SweepConfigError."""
    name = _task_name(task)
    fix = ("define the task function at the top level of an importable module (or of the script, with the code "
           "that starts the sweep under `if __name__ == \"__main__\":`), or use executor='inprocess'")
    try:
        blob = pickle.dumps(task)
    except Exception as exc:  # noqa: BLE001 - any pickling error means the same to the user
        raise SweepConfigError(f"task {name} cannot be sent to worker processes ({type(exc).__name__}: {exc}); "
                               f"{fix}") from None
    try:
        error = pool.submit(_load_task, blob).result()
    except concurrent.futures.process.BrokenProcessPool:
        raise SweepConfigError(
            f"the worker processes ({start_method} start method) died before running any task (their error is "
            f"on stderr); the usual cause is a script that starts the sweep outside `if __name__ == "
            f"\"__main__\":`, which every worker runs again; {fix}") from None
    if error:
        raise SweepConfigError(f"worker processes cannot load the task {name}: {error}; {fix}")


def _pool_round(ctx, call: Callable, queue: collections.deque, n_workers: int, parent_pid: int | None,
                probe: Callable | None):
    """Run jobs from the front of ``queue`` on a fresh pool until the queue is empty or a worker dies.

    Yields ``(key, task id, outcome)`` as tasks finish; returns ``(lost, n_finished)``: the
    jobs that were in the pool when a worker died (the pool is then unusable) and the number
    of tasks finished.  The pool never holds more jobs than workers, so the jobs lost are
    the ones that were running: the suspects of the death, and nothing queued behind them.
    """
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx,
                                                  initializer=_die_with_parent, initargs=(parent_pid,))
    finished = False
    try:
        if probe is not None:
            probe(pool)
        running: dict[concurrent.futures.Future, Job] = {}
        lost: list[Job] = []
        n_finished = 0
        while True:
            while queue and not lost and len(running) < n_workers:
                job = queue.popleft()
                try:
                    running[pool.submit(call, job[0])] = job
                except concurrent.futures.process.BrokenProcessPool:  # a worker died between two tasks
                    queue.appendleft(job)
                    break
            if not running:
                break
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for fut in done:
                job = running.pop(fut)
                exc = fut.exception()
                if isinstance(exc, concurrent.futures.process.BrokenProcessPool):
                    lost.append(job)  # the pool is broken: the others still running end the same way
                else:
                    n_finished += 1
                    yield (*job, fut.result() if exc is None else _crash(exc))
        finished = True
        return lost, n_finished
    finally:
        pool.shutdown(wait=finished, cancel_futures=True)


def _alone_main(conn, call: Callable, key: Key, parent_pid: int | None) -> None:
    """Entry point of a process that runs one task alone and sends its outcome back."""
    _die_with_parent(parent_pid)
    conn.send(call(key))
    conn.close()


def _how_it_died(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = str(-exitcode)
        hint = " (as the out-of-memory killer does)" if name == "SIGKILL" else ""
        return f"was killed by signal {name}{hint}"
    return f"exited with code {exitcode} (os._exit, sys.exit in a library, or a crash in native code)"


def _run_alone(ctx, call: Callable, jobs: list[Job], parent_pid: int | None):
    """Run each job in a process of its own (all at once); a job whose process dies is a failure."""
    procs = []
    try:
        for key, tid in jobs:
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_alone_main, args=(send, call, key, parent_pid), name=f"gelav-task-{tid}")
            proc.start()
            send.close()  # the child's copy stays open: EOF on recv means it died before sending
            procs.append((key, tid, proc, recv))
        for key, tid, proc, recv in procs:
            try:
                outcome = recv.recv()
            except EOFError:
                proc.join()
                outcome = _Outcome(error=f"BrokenProcessPool: the worker process running this task "
                                         f"{_how_it_died(proc.exitcode)}, in the pool and again when the task "
                                         f"ran alone in a process of its own")
            yield key, tid, outcome
    finally:
        for _, _, proc, recv in procs:
            if proc.is_alive():  # the sweep stopped early (fail_fast, an interrupt)
                proc.kill()
            proc.join()
            recv.close()


def _run_processes(task, jobs, entropy, seed_as, params, n_workers, start_method):
    """Run the jobs on a process pool; a worker that dies costs only its own task.

    A dead worker breaks a ``ProcessPoolExecutor``: every job in it fails.  The jobs that were
    in the pool then are retried each in a process of its own (the one that killed its worker
    dies again and is a failure; the others finish), and the rest go on in a fresh pool.
    Tasks are seeded by key, so a retried task gives what an undisturbed run gives.
    """
    _check_main_guard(start_method)
    ctx = multiprocessing.get_context(start_method)
    parent_pid = None if start_method == "forkserver" else os.getpid()
    call = functools.partial(_execute, task, entropy=entropy, seed_as=seed_as, params=params)
    queue = collections.deque(jobs)
    probe = functools.partial(_probe_pool, task=task, start_method=start_method)
    stalled = 0
    while queue:
        lost, n_finished = yield from _pool_round(ctx, call, queue, n_workers, parent_pid, probe)
        probe = None
        # a pool whose workers die without running anything, again and again, is not the tasks' doing
        stalled = 0 if lost or n_finished else stalled + 1
        if stalled == 3:
            raise RuntimeError("the worker processes keep dying before they run a task (out of memory? killed?); "
                               "finished tasks are kept, a re-run resumes")
        yield from _run_alone(ctx, call, lost, parent_pid)


def _run_dask(task, jobs, entropy, seed_as, params, n_workers, scheduler):
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:  # pragma: no cover - dask is a dependency
        raise ImportError("executor='dask' needs dask[distributed] (pip install 'dask[distributed]')") from None
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None)
        client = Client(cluster, set_as_default=False)
    else:
        client = Client(scheduler, set_as_default=False)
    token = uuid.uuid4().hex[:8]
    futures = {}
    try:
        for key, tid in jobs:
            fut = client.submit(_execute, task, key, entropy, seed_as, params,
                                key=f"gelav-task-{tid}-{token}", pure=False)
            futures[fut] = (key, tid)
        for fut in as_completed(list(futures), loop=client.loop):
            key, tid = futures.pop(fut)
            try:
                outcome = fut.result()
            except Exception as exc:  # KilledWorker, lost connection
                outcome = _crash(exc)
            fut.release()
            yield key, tid, outcome
    finally:
        if futures:
            client.cancel(list(futures))
        client.close()
        if cluster is not None:
            cluster.close()


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------------- the sweep


@dataclass(frozen=True)
class _Options:
    """run_sweep's arguments, checked; ``executor`` may still be ``"auto"`` (resolved by pending work)."""

    task: Callable
    name: str
    params: dict
    params_record: Any
    executor: str
    n_workers: int | None
    scheduler: str | None
    seed_as: str
    start_method: str
    given_entropy: Any


def _check_options(task, params, seed, executor, n_workers, scheduler, seed_as, start_method) -> _Options:
    """run_sweep's arguments checked (a one-line error naming the bad one) before anything is touched."""
    params = dict(params or {})
    params_record = _jsonable(params, "params")
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if seed_as not in SEED_AS:
        raise ValueError(f"seed_as must be one of {SEED_AS}, got {seed_as!r}")
    if scheduler is not None:
        if executor == "auto":
            executor = "dask"
        elif executor != "dask":
            raise ValueError(f"scheduler={scheduler!r} needs executor='dask', got executor={executor!r}")
        if n_workers is not None:
            raise ValueError("n_workers sizes a local cluster; a running scheduler (scheduler=...) has its own workers")
    if n_workers is not None and not (isinstance(n_workers, (int, np.integer)) and n_workers >= 1):
        raise ValueError(f"n_workers must be a positive int or None, got {n_workers!r}")
    if start_method not in multiprocessing.get_all_start_methods():
        raise ValueError(f"start_method must be one of {multiprocessing.get_all_start_methods()}, got {start_method!r}")
    name = _task_name(task)
    given_entropy = None if seed is None else _resolve_entropy(seed, None)
    if executor in ("processes", "dask"):
        _check_importable(task, executor)
    if executor == "processes":
        _check_main_guard(start_method)
    return _Options(task, name, params, params_record, executor, None if n_workers is None else int(n_workers),
                    scheduler, seed_as, start_method, given_entropy)


def _open_folder(folder: Path, keys: list[Key], ids: list[str], opts: _Options, overwrite: bool) -> Any:
    """Check (or start) the folder's manifest for this sweep; return the sweep's seed entropy.

    Called with the folder's lock held: also removes the temporary files of killed runs
    from ``tasks/`` (nobody else writes there now).
    """
    tasks_dir = folder / TASKS_DIR
    manifest = None if overwrite else _read_manifest(folder)
    if overwrite:
        _clear(folder)
    entropy = opts.given_entropy if opts.given_entropy is not None else _resolve_entropy(
        None, manifest["configuration"]["seed_entropy"] if manifest else None)
    config = {"task": opts.name, "params": opts.params_record, "seed_entropy": entropy, "seed_as": opts.seed_as,
              "bit_generator": "PCG64"}
    if manifest is not None:
        diff = _config_differences(manifest["configuration"], json.loads(json.dumps(config)),
                                   [t["key"] for t in manifest.get("tasks", [])], keys)
        if diff:
            raise SweepConfigError(f"{folder} holds a sweep with another configuration:\n  " + "\n  ".join(diff)
                                   + "\nuse another folder, or overwrite=True to discard the earlier results")
        recorded_version = manifest.get("version")
        if recorded_version != _package_version():
            warnings.warn(f"{folder}: resuming a sweep started with gelav {recorded_version} under gelav "
                          f"{_package_version()}", stacklevel=3)
    else:
        stray = sorted(p.name for p in tasks_dir.glob("*.parquet")) if tasks_dir.is_dir() else []
        if stray:
            raise SweepConfigError(f"{tasks_dir} holds {len(stray)} task files but {folder} has no manifest; "
                                   "use another folder or overwrite=True")
        record = {"format": MANIFEST_FORMAT, "package": "gelav", "version": _package_version(),
                  "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "configuration": config,
                  "tasks": [{"id": tid, "key": k, "spawn_key": list(key_words(k))} for k, tid in zip(keys, ids)]}
        write_text(folder / MANIFEST_NAME, _manifest_text(record))
    tasks_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(tasks_dir)
    for legacy in tasks_dir.glob(".*.parquet*"):  # temporaries named before they carried their owner
        if ".gtmp-" not in legacy.name:
            legacy.unlink(missing_ok=True)
    return entropy


def _outcomes(opts: _Options, pending: list[Job], entropy: Any, n_workers: int, executor: str):
    """The executor's generator of ``(key, task id, outcome)`` over the pending jobs."""
    args = (opts.task, pending, entropy, opts.seed_as, opts.params)
    if executor == "inprocess":
        return _run_inprocess(*args)
    if executor == "processes":
        return _run_processes(*args, n_workers, opts.start_method)
    return _run_dask(*args, n_workers, opts.scheduler)


def _run_pending(outcomes, folder: Path, bar, fail_fast: bool) -> tuple[int, list[TaskFailure]]:
    """Write each finished task's file as it comes; collect the failures.  Returns (done, failures)."""
    tasks_dir = folder / TASKS_DIR
    failures: list[TaskFailure] = []
    done = 0
    try:
        for key, tid, outcome in outcomes:
            if outcome.table is not None:
                with atomic_path(tasks_dir / f"{tid}.parquet") as tmp:
                    pq.write_table(outcome.table, tmp)
                done += 1
            else:
                failure = TaskFailure(key=key, task_id=tid, error=outcome.error, traceback=outcome.traceback)
                failures.append(failure)
                if fail_fast:
                    _write_failures(folder, failures)
                    raise SweepTaskError(failure)
                bar.set_postfix(failed=len(failures), refresh=False)
            bar.update(1)
    finally:
        outcomes.close()
        bar.close()
    return done, failures


def run_sweep(
    task: Callable[..., pd.DataFrame | Mapping[str, Any]],
    keys: Sequence[Mapping[str, Any]],
    folder: str | os.PathLike,
    *,
    seed: int | Sequence[int] | np.random.SeedSequence | None = None,
    params: Mapping[str, Any] | None = None,
    executor: Literal["auto", "inprocess", "processes", "dask"] = "auto",
    n_workers: int | None = None,
    scheduler: str | None = None,
    fail_fast: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    seed_as: Literal["generator", "seed_sequence"] = "generator",
    start_method: str = "spawn",
) -> SweepResult:
    """Run ``task(key, seed, **params)`` for every key not yet finished in ``folder``.

    Parameters
    ----------
    task : top-level callable ``task(key: dict, seed, **params)`` returning a DataFrame or a
        dict of columns (all scalars: one row).  ``seed`` is a ``numpy.random.Generator``
        (PCG64) built from the task's ``SeedSequence``, or the ``SeedSequence`` itself with
        ``seed_as="seed_sequence"``.
    keys : the task keys, dicts of bool/int/float/str with the same field names; distinct.
        Their order sets the row order of the result, not the seeds.
    folder : sweep folder: ``manifest.json`` and ``tasks/<id>.parquet``.
    seed : sweep seed entropy.  ``None``: the one recorded in ``folder``'s manifest, or fresh
        entropy (recorded) for a new sweep.
    params : JSON-like keyword arguments passed to every task and recorded in the manifest.
    executor : ``"inprocess"``, ``"processes"``, ``"dask"`` or ``"auto"`` (``"dask"`` when
        ``scheduler`` is given; in-process when at most one worker would be used; processes
        otherwise).
    n_workers : worker processes (processes, local Dask cluster); default: the CPUs this
        process may use, at most the number of pending tasks.
    scheduler : address of a running Dask scheduler (``"tcp://host:8786"``); with it no local
        cluster is started.
    fail_fast : stop at the first failing task and raise :class:`SweepTaskError` (finished
        tasks stay written); by default failures are collected and the sweep goes on.
    overwrite : delete the folder's earlier sweep (its manifest and task files) first.
    progress : show a tqdm bar; ``None``: only when stderr is a terminal.
    start_method : ``multiprocessing`` start method for ``"processes"``.

    Returns
    -------
    SweepResult with the results of all finished tasks and the counts of this run.

    Raises
    ------
    SweepConfigError when ``folder`` holds a sweep with a different configuration (task
    function, params, seed, ``seed_as`` or key set) and ``overwrite`` is false, or when
    worker processes could not load the task (checked before any task runs).
    SweepFailedError when every task of the sweep failed (none has a result).
    experiments.io.FolderBusy when another live run holds ``folder``.
    """
    keys = _normalise_keys(keys)
    opts = _check_options(task, params, seed, executor, n_workers, scheduler, seed_as, start_method)
    folder = Path(folder)
    ids = [task_id(k) for k in keys]
    with folder_lock(folder, what=f"sweep of {opts.name}"):
        entropy = _open_folder(folder, keys, ids, opts, overwrite)
        pending = [(k, tid) for k, tid in zip(keys, ids) if not (folder / TASKS_DIR / f"{tid}.parquet").exists()]
        skipped = len(keys) - len(pending)
        workers = opts.n_workers or max(1, min(_cpu_count(), len(pending)))
        executor = opts.executor
        if executor == "auto":
            executor = "inprocess" if workers <= 1 or len(pending) <= 1 else "processes"
        done, failures = 0, []
        if pending:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(keys), initial=skipped, unit="task", desc=folder.name or "sweep",
                       disable=None if progress is None else not progress, dynamic_ncols=True)
            done, failures = _run_pending(_outcomes(opts, pending, entropy, workers, executor), folder, bar,
                                          fail_fast)
        _write_failures(folder, failures)
        frame = _collect(folder / TASKS_DIR, keys, ids)
    if failures and done == 0 and skipped == 0:
        raise SweepFailedError(failures, folder)
    return SweepResult(frame=frame, done=done, skipped=skipped, failed=len(failures),
                       failures=tuple(failures), folder=folder)


def _write_failures(folder: Path, failures: list[TaskFailure]) -> None:
    """``failures.json`` lists the last run's failed tasks; it is removed after a clean run."""
    path = folder / FAILURES_NAME
    if not failures:
        path.unlink(missing_ok=True)
        return
    data = [{"key": f.key, "id": f.task_id, "error": f.error, "traceback": f.traceback} for f in failures]
    write_text(path, json.dumps(data, indent=1) + "\n")


def _collect(tasks_dir: Path, keys: list[Key], ids: list[str]) -> pd.DataFrame:
    frames = [pd.read_parquet(p, engine="pyarrow") for p in (tasks_dir / f"{tid}.parquet" for tid in ids) if p.exists()]
    if not frames:
        return pd.DataFrame({name: [] for name in keys[0]})
    return pd.concat(frames, ignore_index=True)


def read_sweep(folder: str | os.PathLike) -> pd.DataFrame:
    """The results of a sweep folder's finished tasks, in the manifest's task order (no run)."""
    folder = Path(folder)
    manifest = _read_manifest(folder)
    if manifest is None:
        raise FileNotFoundError(f"{folder} has no {MANIFEST_NAME}: not a sweep folder")
    keys = [t["key"] for t in manifest["tasks"]]
    return _collect(folder / TASKS_DIR, keys, [t["id"] for t in manifest["tasks"]])
