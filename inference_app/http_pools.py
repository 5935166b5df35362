"""Keep-alive HTTP connection pools to model instances, one per process (made anew after fork)."""

from __future__ import annotations

import os
import threading

import urllib3


class ProcessPool:
    """A urllib3 PoolManager that a forked child never shares with its parent."""

    def __init__(self, num_pools: int, maxsize: int):
        self.num_pools = num_pools
        self.maxsize = maxsize
        self._pool: urllib3.PoolManager | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def get(self) -> urllib3.PoolManager:
        if self._pool is None or self._pid != os.getpid():
            with self._lock:
                if self._pool is None or self._pid != os.getpid():
                    self._pool = urllib3.PoolManager(
                        num_pools=self.num_pools, maxsize=self.maxsize, block=False, retries=False
                    )
                    self._pid = os.getpid()
        return self._pool
