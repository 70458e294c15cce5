"""A proofreading writer process for the kill tests (``python -m tests.proofreading._writer``).

It opens a :class:`Proofreader` on a dataset made by :func:`_support.make_dataset`
(which replays what an earlier, killed life left pending), then makes a seeded random
sequence of edits: paints and erases of random boxes, merges, cleaves, synapse edits,
undos and redos. Before each call it prints ``INTENT {...}``; right after the call
returns (the journal commit is the acknowledgement) ``ACK {...}`` with the journal seq,
or ``REFUSED {...}`` if the edit was refused. Each line is one flushed write, so a
SIGKILL never leaves half an acknowledged line. ``READY`` follows the opening, ``DONE``
the last edit.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from sqlalchemy import select

from napari_connecto.annotations import schema
from napari_connecto.errors import EditConflictError, EditError
from napari_connecto.proofreading.proofreader import Proofreader
from tests.proofreading._support import AUTHOR, RESOLUTION, SHAPE, Dataset, from_db, paint_mask

OPS = ("paint", "erase", "merge", "cleave", "undo", "redo", "syn_add", "syn_move",
       "syn_status", "syn_delete", "syn_partners")  # fmt: skip
WEIGHTS = np.array([30, 4, 14, 8, 12, 6, 10, 4, 5, 3, 4], dtype=float)


def emit(tag: str, body: dict[str, Any] | None = None) -> None:
    """One line on stdout, written and flushed at once."""
    sys.stdout.write(f"{tag} {json.dumps(body)}\n" if body is not None else f"{tag}\n")
    sys.stdout.flush()


class Writer:
    """Chooses and makes edits."""

    def __init__(self, pr: Proofreader, ds: Dataset, seed: int) -> None:
        self.pr = pr
        self.rng = np.random.default_rng(seed)
        self.fragments = list(ds.fragments)
        self.synapses = [
            from_db(i)
            for i in pr.store.run_read(
                lambda c: list(c.execute(select(schema.synapses.c.id)).scalars())
            )
        ]

    # choosing -------------------------------------------------------------------------
    def _position(self) -> list[float]:
        return [float(self.rng.uniform(0, n * r)) for n, r in zip(SHAPE, RESOLUTION)]

    def _pick(self, values: list[int], k: int | None = None) -> Any:
        """One value (or ``k`` distinct ones) of a list of ids, never through float64."""
        if k is None:
            return values[int(self.rng.integers(len(values)))]
        return [values[int(i)] for i in self.rng.permutation(len(values))[:k]]

    def _segment(self, fragment: int) -> int:
        return int(self.pr.mapping()(np.array([fragment], dtype=np.uint64))[0])

    def choose(self) -> dict[str, Any]:
        """The next edit (its arguments fixed before the call)."""
        op = str(self.rng.choice(OPS, p=WEIGHTS / WEIGHTS.sum()))
        if op in ("syn_move", "syn_status", "syn_delete", "syn_partners") and not self.synapses:
            op = "syn_add"
        if op in ("paint", "erase"):
            return self._choose_paint(erase=op == "erase")
        if op == "merge":
            a, b = self._pick(self.fragments, 2)
            return {"op": "merge", "keep": self._segment(a), "absorb": self._segment(b)}
        if op == "cleave":
            segment = self._segment(self._pick(self.fragments))
            frags = sorted(int(f) for f in self.pr.fragments_of(segment))
            k = int(self.rng.integers(1, len(frags))) if len(frags) > 1 else 1
            chosen = sorted(self._pick(frags, k))
            return {"op": "cleave", "segment": segment, "fragments": chosen}
        return self._choose_simple(op)

    def _choose_paint(self, *, erase: bool) -> dict[str, Any]:
        shape = [int(self.rng.integers(1, 4)), *map(int, self.rng.integers(2, 17, 2))]
        start = [int(self.rng.integers(0, n - s + 1)) for n, s in zip(SHAPE, shape)]
        label = 0
        if not erase:
            fresh = self.rng.random() < 0.3
            label = self.pr.new_id() if fresh else self._pick(self.fragments)
            if fresh:
                self.fragments.append(label)
        seed = int(self.rng.integers(0, 2**31))
        return {"op": "paint", "start": start, "shape": shape, "label": label, "mask_seed": seed}

    def _choose_simple(self, op: str) -> dict[str, Any]:
        out: dict[str, Any] = {"op": op}
        if op == "syn_add":
            out.update(pre=self._position(), post=self._position())
        elif op not in ("undo", "redo"):
            out["sid"] = self._pick(self.synapses)
        if op == "syn_move":
            out["post"] = self._position()
        elif op == "syn_status":
            out["status"] = str(self.rng.choice(["verified", "rejected"]))
        elif op == "syn_partners":
            out["pre_id"] = self._pick(self.fragments)
        return out

    # making ---------------------------------------------------------------------------
    def make(self, op: dict[str, Any]) -> dict[str, Any]:
        """Make one edit; what to acknowledge."""
        pr, kind = self.pr, op["op"]
        if kind == "paint":
            mask = paint_mask(tuple(op["shape"]), op["mask_seed"])
            return {"seq": pr.paint(op["start"], mask, op["label"])}
        if kind == "cleave":
            seq, new = pr.cleave(op["segment"], op["fragments"])
            return {"seq": seq, "new": int(new)}
        if kind in ("undo", "redo"):
            ref = pr.undo() if kind == "undo" else pr.redo()
            return {"ref": ref, "marker": pr.journal.high_water() if ref is not None else None}
        if kind == "syn_add":
            seq = pr.add_synapse(op["pre"], [op["post"]])
            ids = [from_db(i) for i in pr.journal.payload(seq)["synapses"]]
            self.synapses.extend(ids)
            return {"seq": seq, "ids": ids}
        simple: dict[str, Callable[[], int]] = {
            "merge": lambda: pr.merge(op["keep"], op["absorb"]),
            "syn_move": lambda: pr.move_synapse(op["sid"], post=op["post"]),
            "syn_status": lambda: pr.set_status(op["sid"], op["status"]),
            "syn_partners": lambda: pr.set_partners(op["sid"], pre_id=op["pre_id"]),
            "syn_delete": lambda: pr.delete_synapses(op["sid"]),
        }
        seq = simple[kind]()
        if kind == "syn_delete":
            self.synapses.remove(op["sid"])
        return {"seq": seq}


def main(argv: list[str] | None = None) -> int:
    """Run one writer life."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset", help="dataset.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--background", action="store_true", help="write voxels on a thread")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    ds = Dataset.load(args.dataset)
    pr = Proofreader(ds.store, ds.source, author=AUTHOR, background=args.background)
    emit("READY", {"pid": os.getpid()})
    writer = Writer(pr, ds, args.seed)
    for _ in range(args.steps):
        op = writer.choose()
        emit("INTENT", op)
        try:
            ack = writer.make(op)
        except (EditError, EditConflictError) as exc:
            emit("REFUSED", {"error": str(exc)[:200]})
            continue
        emit("ACK", ack)
    pr.close()
    emit("DONE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
