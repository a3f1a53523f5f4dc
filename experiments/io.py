"""Atomic file output, the debris of killed runs, and one run per output folder.

Atomic writes
    :func:`atomic_path` writes to a temporary file in the target folder, then renames it:
    a reader never sees a half-written file, and an interrupted run leaves the previous
    version (or nothing) in place.

Temporary files of killed runs
    A run killed while writing (SIGKILL, out of memory, power loss) cannot remove its
    temporary files, and a dataset's can be hundreds of MB.  Each temporary name therefore
    carries its owner, ``.NAME.gtmp-PID-HOST-XXXXXXXX.SUFFIX`` (``HOST``: 8 hex digits of a
    hash of the host name), and :func:`remove_stale_temporaries` deletes those whose owner
    is a process of this host that no longer exists.  It runs the first time a process
    writes into a folder (:func:`atomic_path`) and whenever a folder lock is taken, so the
    next run in a folder clears a dead run's debris.  A temporary file is never deleted
    while its owner may be alive: files of other hosts are left alone (their processes
    cannot be seen from here), and so are files whose PID now belongs to another process
    (PID reuse: the file then waits for a later run).

One run per folder
    :func:`folder_lock` (and the decorator :func:`locks_folder`) hold an exclusive
    ``fcntl.flock`` on ``FOLDER/.gelav.lock`` while a command writes a resumable folder (a
    sweep, a convergence study, a dataset, a crisis experiment).  The file holds the
    owner's PID, host, start time and command line, so that a second run refuses at once
    with a one-line :class:`FolderBusy` naming the owner.  The kernel drops a flock when its
    owner dies, so the lock of a killed run never blocks; the file is removed when the
    lock is released.  ``GELAV_LOCK_WAIT=SECONDS`` (``inf``: no limit) makes a second run
    wait for the folder instead of refusing.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
import os
import re
import socket
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import click

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks (folder_lock only records the owner)
    fcntl = None

__all__ = [
    "atomic_path",
    "write_text",
    "write_csv",
    "save_figure",
    "remove_stale_temporaries",
    "OutputFolder",
    "writable_folder_problem",
    "folder_lock",
    "locks_folder",
    "FolderBusy",
    "LOCK_NAME",
    "LOCK_WAIT_ENV",
]

LOCK_NAME = ".gelav.lock"
LOCK_WAIT_ENV = "GELAV_LOCK_WAIT"
_TMP_MARK = "gtmp"
# .NAME.gtmp-PID-HOST-RANDOM[.SUFFIX]: RANDOM is mkstemp's 8 characters
_TMP_RE = re.compile(rf"^\..+\.{_TMP_MARK}-(?P<pid>\d+)-(?P<host>[0-9a-f]{{8}})-[a-z0-9_]{{8}}")


class FolderBusy(click.ClickException, RuntimeError):
    """Another live process holds the folder's lock.

    A ``click.ClickException``, so that every ``gelav`` command prints it as one line
    (``Error: ...``) and exits with code 75 (EX_TEMPFAIL of sysexits.h: try again later).
    """

    exit_code = 75


class OutputFolder(click.Path):
    """A ``--out`` folder, checked for writability when the command line is parsed, before any work.

    An existing folder gets a probe file written and removed; a missing one is not created (a
    refused scenario leaves nothing behind): its nearest existing ancestor must be a folder we
    may write in.  A folder that cannot be written is refused with one line naming it and the
    reason (exit code 2)."""

    name = "folder"

    def __init__(self):
        super().__init__(file_okay=False, dir_okay=True, path_type=Path)

    def convert(self, value, param, ctx):
        path = Path(super().convert(value, param, ctx))
        reason = writable_folder_problem(path)
        if reason:
            self.fail(f"{path}: cannot write there ({reason})", param, ctx)
        return path


def writable_folder_problem(path: Path) -> str | None:
    """Why ``path`` cannot serve as an output folder (``None`` if it can), without creating it."""
    path = Path(path).absolute()
    if path.exists():
        if not path.is_dir():
            return "not a folder"
        try:
            fd, probe = tempfile.mkstemp(prefix=".gelav-probe.", dir=path)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            return exc.strerror or str(exc)
        return None
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is not a folder"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"no permission to create folders in {ancestor}"
    return None


class LockWaitInvalid(click.ClickException, ValueError):
    """``GELAV_LOCK_WAIT`` is not a number of seconds (one line, exit code 2 on the command line)."""

    exit_code = 2


# --------------------------------------------------------------------------- temporary files


@functools.lru_cache(maxsize=1)
def _host_tag() -> str:
    """8 hex digits of SHA-256 of this host's name: fixed length, so the temporary name parses back."""
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _owner_alive(pid: int, host: str) -> bool:
    """False only when ``pid`` is certainly not a running process of this host."""
    if host != _host_tag() or pid == os.getpid():
        return True
    if os.name == "nt":  # pragma: no cover - os.kill(pid, 0) would terminate the process there
        return True
    try:
        os.kill(pid, 0)  # signal 0: existence and permission check only
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    if not os.path.exists("/proc/self/stat"):  # not Linux: no cheap way to tell a zombie
        return True
    try:  # a zombie (dead, not yet reaped: e.g. re-parented to an init that does not reap) writes no more
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:  # it has just gone
        return False
    except (OSError, IndexError):
        return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files in ``folder`` whose owner process is dead; return their paths.

    Only names written by :func:`atomic_path` (``.NAME.gtmp-PID-HOST-XXXXXXXX...``) are
    considered, and only those of a PID of this host that no longer runs (a zombie, dead but
    not yet reaped, counts as dead on Linux).  A missing folder has nothing to remove.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        m = _TMP_RE.match(entry.name)
        if m is None or not entry.is_file(follow_symlinks=False):
            continue
        if not _owner_alive(int(m["pid"]), m["host"]):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    _CLEANED.add(os.path.realpath(folder))
    return removed


# Folders this process has cleaned: atomic_path cleans a folder at its first write there only, so that
# writing many files into one folder (a sweep's tasks/) does not list the folder each time.
_CLEANED: set[str] = set()


@contextmanager
def atomic_path(target: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    The temporary file keeps the target's suffix so that writers which infer the
    format from the name (matplotlib, pandas) behave as for the final name; its name
    carries this process's PID and host so that a later run can remove it if this
    process is killed (:func:`remove_stale_temporaries`, run at the first write of this
    process into the folder).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if os.path.realpath(target.parent) not in _CLEANED:
        remove_stale_temporaries(target.parent)
    prefix = f".{target.name}.{_TMP_MARK}-{os.getpid()}-{_host_tag()}-"
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix or target.suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates the file 0600; give it the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text(target: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_csv(target: str | os.PathLike, frame) -> Path:
    """Write a pandas DataFrame as CSV atomically (no index column)."""
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(target)


def save_figure(target: str | os.PathLike, fig, **kwargs) -> Path:
    """Save a matplotlib figure atomically."""
    kwargs.setdefault("dpi", 130)
    kwargs.setdefault("bbox_inches", "tight")
    with atomic_path(target) as tmp:
        fig.savefig(tmp, **kwargs)
    return Path(target)


# --------------------------------------------------------------------------- folder lock

# Locks this process holds: real folder path -> [thread id, depth].  A flock conflicts between two
# open files even in one process, so a nested lock of the same folder (run_study -> run_sweep) is
# counted here instead of taken twice; another thread of this process is refused like another process.
_HELD: dict[str, list[int]] = {}
_HELD_GUARD = threading.Lock()


def _lock_wait() -> float:
    """Seconds to wait for a busy folder: ``GELAV_LOCK_WAIT`` (default 0: refuse at once)."""
    raw = os.environ.get(LOCK_WAIT_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        wait = math.nan
    if not wait >= 0:
        raise LockWaitInvalid(f"{LOCK_WAIT_ENV} must be a number of seconds >= 0 (or inf), got {raw!r}")
    return wait


def _owner_line(path: Path) -> str:
    """Who holds the lock, from the lock file (the owner writes it just after locking: retried briefly)."""
    for _ in range(5):
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            return (f"{info.get('what', 'gelav')} (pid {info['pid']} on host {info['host']}, started "
                    f"{info['started']}: {info.get('command', '?')})")
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.1)
    return "another process (not identified: its lock file is unreadable)"


def _busy(folder: Path, path: Path) -> FolderBusy:
    return FolderBusy(f"{folder} is in use by {_owner_line(path)}; wait for it to finish, run in another "
                      f"folder, or set {LOCK_WAIT_ENV}=SECONDS to wait for it")


def _acquire(folder: Path, path: Path, wait: float) -> int:
    """Open and flock ``path`` (exclusive), waiting up to ``wait`` seconds; return the descriptor."""
    deadline = time.monotonic() + wait
    while True:
        folder.mkdir(parents=True, exist_ok=True)  # an owner that created the folder removes it when done
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise _busy(folder, path) from None
                    time.sleep(min(0.2, max(deadline - time.monotonic(), 0.0)))
            # The previous owner unlinks the file before it unlocks: if it did so after we opened it, we
            # hold a lock on a deleted file that a third run cannot see.  Lock the file now at the path.
            try:
                if os.path.samestat(os.fstat(fd), os.stat(path)):
                    return fd
            except FileNotFoundError:
                pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _write_owner(fd: int, what: str) -> None:
    info = {"what": what, "pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(" ".join(sys.argv).split())[:300]}  # one line, whatever the arguments hold
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(info) + "\n").encode("utf-8"))


@contextmanager
def folder_lock(folder: str | os.PathLike, *, what: str = "a gelav run", wait: float | None = None) -> Iterator[Path]:
    """Hold the exclusive lock of ``folder`` (created if missing) while the block runs.

    what : the run, as the refusal of a second run names it ("gelav dataset", "sweep").
    wait : seconds to wait for a busy folder; ``None``: ``GELAV_LOCK_WAIT`` (default 0, refuse at once).

    Raises :class:`FolderBusy` naming the owner when another live process (or another thread
    of this one) holds the lock.  On entry, the temporary files of dead runs are removed
    from the folder.  On exit the lock file is removed, and so is the folder if this call
    created it and it is still empty.  Reentrant within one thread.

    The lock is an ``fcntl.flock``: the kernel releases it when its holder dies, however it
    dies.  A process forked (without exec) from the holder shares the lock while it lives;
    the sweep runner's workers are spawned, and die with their parent.
    """
    folder = Path(folder)
    wait = _lock_wait() if wait is None else wait
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(folder)
    me = threading.get_ident()
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is not None and held[0] == me:
            held[1] += 1
    if held is not None and held[0] == me:
        try:
            yield folder
        finally:
            with _HELD_GUARD:
                held[1] -= 1
        return
    if held is not None and wait == 0:
        raise FolderBusy(f"{folder} is in use by another thread of this process (pid {os.getpid()})")
    path = folder / LOCK_NAME
    fd = _acquire(folder, path, wait) if fcntl is not None else os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        _write_owner(fd, what)
        with _HELD_GUARD:
            _HELD[key] = [me, 1]
        remove_stale_temporaries(folder)
        yield folder
    finally:
        with _HELD_GUARD:
            _HELD.pop(key, None)
        path.unlink(missing_ok=True)  # before unlocking: see _acquire
        os.close(fd)
        if created:
            try:
                folder.rmdir()
            except OSError:  # not empty: the run wrote something
                pass


def locks_folder(param: str = "out", *, what: str | None = None) -> Callable:
    """Decorator: hold :func:`folder_lock` on the folder passed as argument ``param`` during each call."""

    def deco(fn: Callable) -> Callable:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            with folder_lock(bound.arguments[param], what=what or fn.__qualname__):
                return fn(*args, **kwargs)

        return wrapper

    return deco
