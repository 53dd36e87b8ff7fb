"""The bounded inference queue, on its own (threads) and through the real server."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.inference_queue import InferenceQueue, QueueFull


def test_at_most_workers_run_and_past_the_waiting_room_requests_are_refused_at_once():
    queue = InferenceQueue(workers=1, waiting=1)
    release, started = threading.Event(), threading.Event()

    def hold():
        with queue.slot():
            started.set()
            release.wait(10)

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(hold)
        assert started.wait(5)
        second = pool.submit(hold)  # waits for the worker
        deadline = threading.Event()
        while queue.depth()["waiting"] != 1 and not deadline.wait(0.01):
            pass
        assert queue.depth() == {"running": 1, "waiting": 1, "capacity": 2}
        with pytest.raises(QueueFull):
            with queue.slot():
                pass
        release.set()
        first.result(5), second.result(5)
    assert queue.depth() == {"running": 0, "waiting": 0, "capacity": 2}
    with queue.slot():  # free again
        assert queue.depth()["running"] == 1


def test_a_failing_segmentation_gives_its_slot_back():
    queue = InferenceQueue(workers=1, waiting=0)
    with pytest.raises(ValueError):
        with queue.slot():
            raise ValueError("boom")
    with queue.slot():
        assert queue.depth()["running"] == 1
