"""Memory a computation will need, checked before it starts (docs/model.md 3.3).

A solve or a simulation states what it will allocate; :func:`check_memory` refuses it with a
message naming the arrays and the sizes that drive them when that exceeds what the machine
has available, instead of a ``MemoryError`` deep inside (or the machine swapping).
"""

from __future__ import annotations

import os

__all__ = ["available_memory", "check_memory", "GiB"]

GiB = float(1 << 30)


def available_memory() -> float:
    """Bytes of memory available to this process: ``MemAvailable`` of ``/proc/meminfo`` where the
    system has one, else the physical memory reported by ``sysconf``, else infinity."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024.0
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return float("inf")


def check_memory(need: float, what: str, hint: str, *, fraction: float = 0.9) -> None:
    """Raise ``MemoryError`` with a one-line message when ``need`` bytes exceed ``fraction`` of
    :func:`available_memory`.  ``what`` says what is allocated (with its sizes), ``hint`` how
    to need less."""
    have = available_memory()
    if need > fraction * have:
        raise MemoryError(f"{what} needs {need / GiB:.3g} GiB but {have / GiB:.3g} GiB is available: {hint}")
