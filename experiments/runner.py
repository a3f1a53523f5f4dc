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
    unless ``overwrite=True``.  One run per folder at a time.

Executors
    ``"inprocess"`` (a loop in this process), ``"processes"`` (``ProcessPoolExecutor`` with an
    explicit ``multiprocessing`` context, ``"spawn"`` by default: Mesa sets the process-wide
    start method to spawn, and spawn is safe with numba's and pandas' threads) and
    ``"dask"`` (a loopback ``LocalCluster`` of worker processes, or a running scheduler named
    by ``scheduler="ADDRESS"``).  With processes and Dask the task function must be an
    importable top-level callable (not a lambda or a function defined inside another).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import math
import multiprocessing
import os
import sys
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

from .io import atomic_path, write_text

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
    """The sweep folder holds a sweep with another configuration (or stray files)."""


class SweepTaskError(RuntimeError):
    """A task raised and ``fail_fast=True`` stopped the sweep; ``.failure`` has its key and traceback."""

    def __init__(self, failure: "TaskFailure") -> None:
        self.failure = failure
        super().__init__(f"task {failure.key} failed ({failure.error}); finished tasks are kept.\n{failure.traceback}")


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


def _run_processes(task, jobs, entropy, seed_as, params, n_workers, start_method):
    ctx = multiprocessing.get_context(start_method)
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx)
    finished = False
    try:
        futures = {pool.submit(_execute, task, key, entropy, seed_as, params): (key, tid) for key, tid in jobs}
        for fut in concurrent.futures.as_completed(futures):
            key, tid = futures.pop(fut)
            try:
                outcome = fut.result()
            except Exception as exc:  # BrokenProcessPool: a worker died (os._exit, OOM kill)
                outcome = _crash(exc)
            yield key, tid, outcome
        finished = True
    finally:
        pool.shutdown(wait=finished, cancel_futures=True)


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
    function, params, seed, ``seed_as`` or key set) and ``overwrite`` is false.
    """
    keys = _normalise_keys(keys)
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
    given_entropy = None if seed is None else _resolve_entropy(seed, None)  # checked before anything is touched
    if executor in ("processes", "dask"):
        _check_importable(task, executor)

    folder = Path(folder)
    tasks_dir = folder / TASKS_DIR
    manifest = None if overwrite else _read_manifest(folder)
    if overwrite:
        _clear(folder)
    entropy = given_entropy if seed is not None else _resolve_entropy(
        None, manifest["configuration"]["seed_entropy"] if manifest else None)
    ids = [task_id(k) for k in keys]
    config = {
        "task": name,
        "params": params_record,
        "seed_entropy": entropy,
        "seed_as": seed_as,
        "bit_generator": "PCG64",
    }
    if manifest is not None:
        diff = _config_differences(manifest["configuration"], json.loads(json.dumps(config)),
                                   [t["key"] for t in manifest.get("tasks", [])], keys)
        if diff:
            raise SweepConfigError(f"{folder} holds a sweep with another configuration:\n  " + "\n  ".join(diff)
                                   + "\nuse another folder, or overwrite=True to discard the earlier results")
        recorded_version = manifest.get("version")
        if recorded_version != _package_version():
            warnings.warn(f"{folder}: resuming a sweep started with gelav {recorded_version} under gelav "
                          f"{_package_version()}", stacklevel=2)
    else:
        stray = sorted(p.name for p in tasks_dir.glob("*.parquet")) if tasks_dir.is_dir() else []
        if stray:
            raise SweepConfigError(f"{tasks_dir} holds {len(stray)} task files but {folder} has no manifest; "
                                   "use another folder or overwrite=True")
        record = {
            "format": MANIFEST_FORMAT,
            "package": "gelav",
            "version": _package_version(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "configuration": config,
            "tasks": [{"id": tid, "key": k, "spawn_key": list(key_words(k))} for k, tid in zip(keys, ids)],
        }
        write_text(folder / MANIFEST_NAME, _manifest_text(record))
    tasks_dir.mkdir(parents=True, exist_ok=True)
    for stale in tasks_dir.glob(".*.parquet*"):  # temporaries of a killed run (one run per folder)
        stale.unlink(missing_ok=True)

    pending = [(k, tid) for k, tid in zip(keys, ids) if not (tasks_dir / f"{tid}.parquet").exists()]
    skipped = len(keys) - len(pending)
    if n_workers is None:
        n_workers = max(1, min(_cpu_count(), len(pending)))
    if executor == "auto":
        executor = "inprocess" if n_workers <= 1 or len(pending) <= 1 else "processes"

    failures: list[TaskFailure] = []
    done = 0
    if pending:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(keys), initial=skipped, unit="task", desc=folder.name or "sweep",
                   disable=None if progress is None else not progress, dynamic_ncols=True)
        if executor == "inprocess":
            outcomes = _run_inprocess(task, pending, entropy, seed_as, params)
        elif executor == "processes":
            outcomes = _run_processes(task, pending, entropy, seed_as, params, n_workers, start_method)
        else:
            outcomes = _run_dask(task, pending, entropy, seed_as, params, n_workers, scheduler)
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
    _write_failures(folder, failures)
    frame = _collect(tasks_dir, keys, ids)
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
