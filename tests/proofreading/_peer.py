"""A second proofreader in its own process (``python -m tests.proofreading._peer``).

It reads one JSON command per line on stdin, makes the edit with its
:class:`Proofreader` and answers one JSON line on stdout: ``{"seq": ..., "t": ...}``
(``t`` is ``time.time()`` right after the call returned: the edit is acknowledged), or
``{"error": "<exception class>", "message": ...}``. Commands::

    {"op": "merge", "keep": k, "absorb": a}
    {"op": "paint", "start": [z, y, x], "shape": [dz, dy, dx], "label": n}
    {"op": "sync"}
    {"op": "quit"}
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

import numpy as np

from napari_connecto.errors import ConnectoError
from napari_connecto.proofreading.proofreader import Proofreader


def answer(body: dict[str, Any]) -> None:
    """One line on stdout, flushed."""
    sys.stdout.write(json.dumps(body) + "\n")
    sys.stdout.flush()


def run(pr: Proofreader, command: dict[str, Any]) -> dict[str, Any]:
    """Make one command's edit."""
    op = command["op"]
    if op == "merge":
        seq = pr.merge(command["keep"], command["absorb"])
    elif op == "paint":
        mask = np.ones(tuple(command["shape"]), dtype=bool)
        seq = pr.paint(command["start"], mask, command["label"])
    elif op == "sync":
        pr.sync()
        seq = pr.seen
    else:
        raise ValueError(f"unknown command {op!r}")
    return {"seq": seq, "t": time.time()}


def main(argv: list[str] | None = None) -> int:
    """Serve commands until ``quit`` or the end of stdin."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("store")
    parser.add_argument("source")
    parser.add_argument("--author", default="peer")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    pr = Proofreader(args.store, args.source, author=args.author, background=False,
                     auto_sync=False)  # fmt: skip
    answer({"ready": True, "session": pr.journal.session})
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "quit":
            break
        try:
            answer(run(pr, command))
        except ConnectoError as exc:
            answer({"error": type(exc).__name__, "message": str(exc)})
    pr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
