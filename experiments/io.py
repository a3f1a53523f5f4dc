"""Atomic file output: write to a temporary file in the target folder, then rename.

A reader never sees a half-written file, and an interrupted run leaves the previous
version (or nothing) in place.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "write_text", "write_csv", "save_figure"]


@contextmanager
def atomic_path(target: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    The temporary file keeps the target's suffix so that writers which infer the
    format from the name (matplotlib, pandas) behave as for the final name.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or target.suffix, dir=target.parent)
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
