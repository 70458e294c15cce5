"""Labelled points where kill tests stop a writer process dead (SIGKILL).

Set ``NAPARI_CONNECTO_KILL_AT`` to a label (e.g. ``"after-journal-commit"``) and the
process kills itself with SIGKILL when it reaches that point, exactly as a crash would.
``NAPARI_CONNECTO_KILL_AFTER=N`` (default 1) lets the point be passed ``N - 1`` times
first, so one label can stop the writer at many different moments of a run.
Unset (always, outside tests), :func:`reach` is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import threading

__all__ = ["AFTER_ENV", "ENV", "LABELS", "reach", "reached"]

ENV = "NAPARI_CONNECTO_KILL_AT"
"""Environment variable naming the label to die at."""
AFTER_ENV = "NAPARI_CONNECTO_KILL_AFTER"
"""Environment variable: die on the N-th time the label is reached (default 1)."""

LABELS = (
    "after-journal-commit",
    "between-store-and-volume",
    "mid-chunk-write",
    "before-rename",
    "before-pyramid",
    "after-volume-write",
    "mid-server-edit",
)
"""Labels the write paths call :func:`reach` with.

``after-journal-commit``
    an edit is committed to the journal (acknowledged), nothing else has happened yet;
``between-store-and-volume``
    store rows are committed, the voxel write-back has not started;
``mid-chunk-write``
    part of a temporary chunk (or file) copy is written;
``before-rename``
    the temporary copy is complete and fsynced, not yet renamed over the original;
``before-pyramid``
    the finest scale of an edit is written, its coarser scales are not;
``after-volume-write``
    every scale of an edit is written, the journal does not yet say so;
``mid-server-edit``
    a server-side cleave is done, the renumber to the journal's id is not.
"""

_counts: dict[str, int] = {}
_guard = threading.Lock()


def reach(label: str) -> None:
    """Kill this process with SIGKILL if ``NAPARI_CONNECTO_KILL_AT`` names ``label``.

    With ``NAPARI_CONNECTO_KILL_AFTER=N`` the kill happens the N-th time ``label`` is
    reached in this process (counted from the first call).
    """
    if os.environ.get(ENV) != label:
        return
    with _guard:
        count = _counts[label] = _counts.get(label, 0) + 1
        if count >= _after():
            os.kill(os.getpid(), signal.SIGKILL)


def reached(label: str) -> int:
    """How many times ``label`` was reached while armed (for tests)."""
    with _guard:
        return _counts.get(label, 0)


def _after() -> int:
    """The ``NAPARI_CONNECTO_KILL_AFTER`` count (at least 1)."""
    try:
        return max(1, int(os.environ.get(AFTER_ENV, "1")))
    except ValueError:
        return 1
