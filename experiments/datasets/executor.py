"""Where the partition tasks run: in this process (``local``) or on a Dask cluster (``dask``).

The market's time steps run in this process either way (the one sequential part); the tasks that
build and write the partitions (:mod:`.tables`) are pure functions of their inputs, so a Dask worker
writes the same bytes as this process.  With Dask the static inputs are scattered once, a bounded
number of tasks is kept in flight (back-pressure keeps the driver's memory bounded), and a failed
task fails the run.
"""

from __future__ import annotations

from collections import deque

__all__ = ["LocalExecutor", "DaskExecutor", "make_executor"]


class _Done:
    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


class LocalExecutor:
    """Runs each task at once, in this process."""

    name = "local"

    def scatter(self, obj):
        return obj

    def submit(self, fn, *args):
        return _Done(fn(*args))

    def close(self) -> None:
        pass


class DaskExecutor:
    """Runs tasks on a ``dask.distributed`` cluster: ``client`` (a Client), or a scheduler address, or ``None``
    for a local cluster of ``workers`` processes that is closed with the run."""

    name = "dask"

    def __init__(self, client=None, workers: int = 2, max_pending: int = 8):
        from dask.distributed import Client, LocalCluster

        self._own = None
        if client is None:
            self._own = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
            client = Client(self._own)
        elif isinstance(client, str):
            client = Client(client)
            self._own = client
        self.client = client
        self.pending: deque = deque()
        self.max_pending = max_pending

    def scatter(self, obj):
        return self.client.scatter(obj, broadcast=True, hash=False)

    def submit(self, fn, *args):
        while len(self.pending) >= self.max_pending:
            self.pending.popleft().result()  # back-pressure (and an error surfaces here)
        fut = self.client.submit(fn, *args, pure=False)
        self.pending.append(fut)
        return fut

    def close(self) -> None:
        try:
            for f in self.pending:
                f.cancel()
        finally:
            if self._own is not None:
                self._own.close()


def make_executor(executor="local", client=None, workers: int = 2):
    if executor == "local":
        return LocalExecutor()
    if executor == "dask":
        return DaskExecutor(client, workers)
    raise ValueError(f"executor must be 'local' or 'dask', got {executor!r}")
