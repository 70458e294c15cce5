"""Plan wish lists off the main thread: one background thread runs planning tasks in order.

Working out which chunks a view wants (fetch jobs for the missing blocks, coarse previews,
pins, the neighbouring planes to prefetch) and handing them to the scheduler is pure
Python work of a few milliseconds per view change. Inside the viewer it runs here, so
the main thread only composes what is cached and draws; much of it then runs while the
main thread waits for the window to be composed (the interpreter lock is free then).
Tasks run in submission order, so a layer's plans are applied in the order it read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["Planner"]

logger = logging.getLogger(__name__)


class Planner:
    """A single worker thread running planning tasks first in, first out.

    The thread starts with the first task and stays (a daemon) until :meth:`close`.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._tasks: list[Callable[[], None]] = []
        self._running = False
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, task: Callable[[], None]) -> None:
        """Run ``task()`` on the planning thread after every task submitted before it."""
        with self._cond:
            if self._closed:
                return
            self._tasks.append(task)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="connecto-planner", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def idle(self) -> bool:
        """Whether no task is queued or running (cheap; no lock)."""
        return not (self._tasks or self._running)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until :meth:`idle` or ``timeout`` seconds; return whether idle."""
        with self._cond:
            return self._cond.wait_for(self.idle, timeout)

    def close(self) -> None:
        """Drop queued tasks and stop the thread after the running one."""
        with self._cond:
            self._closed = True
            self._tasks.clear()
            self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._tasks and not self._closed:
                    self._cond.wait()
                if self._closed:
                    self._thread = None
                    return
                self._running = True  # before the pop: idle() reads without the lock
                task = self._tasks.pop(0)
            try:
                task()
            except Exception:  # a failed plan loses one wish list, never the thread
                logger.exception("planning task %r failed", task)
            finally:
                with self._cond:
                    self._running = False
                    self._cond.notify_all()
