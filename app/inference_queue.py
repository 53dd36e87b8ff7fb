"""A bounded queue in front of inference: at most ``workers`` segmentations run at once and ``waiting`` more wait;
past that a request is refused at once (503 with ``Retry-After``) instead of piling up threads and memory while
every annotator waits."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class QueueFull(RuntimeError):
    """Every worker is busy and the waiting room is full."""


class InferenceQueue:
    def __init__(self, workers: int, waiting: int):
        self.workers = workers
        self.capacity = workers + waiting
        self._running = threading.Semaphore(workers)
        self._lock = threading.Lock()
        self._admitted = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one inference slot for the block (waiting for it if the waiting room has space)."""
        with self._lock:
            if self._admitted >= self.capacity:
                raise QueueFull(f"{self._admitted} segmentations are running or waiting (limit {self.capacity})")
            self._admitted += 1
        try:
            with self._running:
                yield
        finally:
            with self._lock:
                self._admitted -= 1

    def depth(self) -> dict[str, int]:
        with self._lock:
            admitted = self._admitted
        return {"running": min(admitted, self.workers), "waiting": max(0, admitted - self.workers),
                "capacity": self.capacity}
