"""Foreground edits before background write-back.

A paint stroke's journal commit is a dozen short round trips to the database. Between
them the editing thread gives up the GIL, and a write-back thread busy downsampling or
writing chunks takes it: each time, the edit waits up to the interpreter's switch
interval (5 ms) to get it back. Edits made while earlier ones are still being written
back then take twice as long. The write-back therefore steps aside at its checkpoints
(between journal rows, chunk reads and writes) while an edit is being made, for at most
``max_wait_s`` at a time so that a stream of edits cannot starve it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

__all__ = ["ForegroundGate"]


class ForegroundGate:
    """Counts edits in progress; background work waits for none to be in progress.

    Parameters
    ----------
    max_wait_s : float
        The longest one checkpoint of the background work waits.
    """

    def __init__(self, max_wait_s: float = 0.1) -> None:
        self.max_wait_s = max_wait_s
        self._active = 0
        self._holders: dict[int, int] = {}
        """Edits in progress per thread (an edit's own thread never waits for itself)."""
        self._changed = threading.Condition()

    @property
    def busy(self) -> bool:
        """Whether an edit is being made right now."""
        return self._active > 0

    @contextlib.contextmanager
    def foreground(self) -> Iterator[None]:
        """Mark an edit in progress for the duration of the block (re-entrant)."""
        me = threading.get_ident()
        with self._changed:
            self._active += 1
            self._holders[me] = self._holders.get(me, 0) + 1
        try:
            yield
        finally:
            with self._changed:
                self._active -= 1
                self._holders[me] -= 1
                if not self._holders[me]:
                    del self._holders[me]
                if self._active == 0:
                    self._changed.notify_all()

    def step_aside(self) -> bool:
        """Background checkpoint: wait while an edit is in progress (bounded).

        A thread that is itself making an edit (a write-back run before the edit's call
        returns) never waits.

        Returns
        -------
        bool
            ``True`` if no other edit is in progress (any more), ``False`` if the wait
            ran out.
        """
        if self._active == 0:  # the common case: no lock, no wait
            return True
        me = threading.get_ident()
        with self._changed:
            if me in self._holders:  # written back within the edit (background=False)
                return True
            return self._changed.wait_for(lambda: self._active == 0, self.max_wait_s)
