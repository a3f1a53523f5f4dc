"""Tell the user when numba will compile kernels: only when its on-disk cache lacks them.

numba caches a compiled kernel beside its source (``__pycache__/<module>.<function>-<line>.*.nbi``).
A command prints a notice that the first run compiles (and roughly how long it takes on 2
cores) only when no compiled kernel of the modules it needs is cached, so warm runs stay quiet.
"""

from __future__ import annotations

import importlib
import os

__all__ = ["kernels_cached", "compile_notice"]


def kernels_cached(*modules: str) -> bool:
    """Whether numba's cache holds compiled kernels of every module named (dotted names).

    A module counts as cached when the cache index of at least one of its ``@njit(cache=True)``
    kernels exists (inlined helpers are compiled into their callers and have none). Uses
    numba's dispatcher internals; when they are not what this expects, it answers ``False``,
    which only costs a notice.
    """
    for name in modules:
        mod = importlib.import_module(name)
        found = False
        for obj in vars(mod).values():
            try:
                path = obj._cache._cache_file._index_path
            except AttributeError:
                continue
            if os.path.exists(path):
                found = True
                break
        if not found:
            return False
    return True


def compile_notice(what: str, seconds: float, *modules: str) -> str | None:
    """A one-line notice that ``what`` compiles numba kernels first (about ``seconds`` on 2 cores), or
    ``None`` when the kernels of ``modules`` are already cached."""
    if kernels_cached(*modules):
        return None
    return (f"(first run: compiling the numba kernels of {what}, about {seconds:.0f} s on 2 cores; "
            "later runs load them from the cache)")
