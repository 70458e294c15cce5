"""The ``labelmap`` data type: supervoxel blocks, the merge mapping, downres levels.

Voxels store *supervoxel* ids (uint64, blocks 64^3 by default). A versioned
mapping supervoxel -> label (identity when absent) turns them into body
labels; ``supervoxels=true`` skips it. Every scale-0 POST recomputes the
touched blocks of scales 1..``MaxDownresLevel`` with DVID's down-sampling rule
(most frequent non-zero label of each 2x2x2 octant, ties to the smaller id).
Label indices (sizes, blocks, supervoxels of a body) are derived from the
blocks on demand instead of being maintained incrementally.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connecto.testing.dvid_server.codecs import downres_labels
from napari_connecto.testing.dvid_server.imageblk import VoxelInstance
from napari_connecto.testing.dvid_server.instances import register
from napari_connecto.testing.dvid_server.protocol import BadRequest, go_point, go_rfc3339
from napari_connecto.testing.dvid_server.versioned import VersionedStore

if TYPE_CHECKING:
    from napari_connecto.testing.dvid_server.instances import Ctx
    from napari_connecto.testing.dvid_server.protocol import Request, Response
    from napari_connecto.testing.dvid_server.snapshot import Snapshot

__all__ = ["Labelmap", "SupervoxelIndex"]


@dataclass(slots=True)
class SupervoxelIndex:
    """Voxel counts and blocks of every supervoxel at one version (scale 0)."""

    counts: dict[int, int] = field(default_factory=dict)
    blocks: dict[int, set[tuple[int, int, int]]] = field(default_factory=lambda: defaultdict(set))


@register
class Labelmap(VoxelInstance):
    """Segmentation with supervoxels, merges, cleaves and a down-res pyramid."""

    typename = "labelmap"
    type_url = "github.com/janelia-flyem/dvid/datatype/labelmap"
    type_version = "0.1"
    dtype = np.dtype(np.uint64)
    value_label = "labelmap"
    interpolable = False
    default_block = 64
    default_compression = "gzip"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        if any(b % 16 for b in self.block_xyz):
            raise BadRequest("BlockSize must be multiples of 16")
        self.indexed = self.config.boolean("IndexedLabels", True)
        self.max_downres = self.config.integer("MaxDownresLevel", 0)
        if not 0 <= self.max_downres <= 255:
            raise BadRequest(
                f"illegal number of down-res levels specified ({self.max_downres}): "
                "must be 0 <= n <= 255"
            )
        self.mapping: VersionedStore[int, int] = VersionedStore()
        self.lastmod: VersionedStore[int, dict[str, Any]] = VersionedStore()
        self.max_label: dict[int, int] = {}
        self.max_repo_label = 0
        self.next_label = 0

    def extended_json(self, ancestry: list[int]) -> dict[str, Any]:
        """``imageblk`` properties plus the label counters."""
        out = super().extended_json(ancestry)
        out.update(
            {
                "MaxLabel": {str(v): n for v, n in sorted(self.max_label.items())},
                "MaxRepoLabel": self.max_repo_label,
                "NextLabel": self.next_label,
                "IndexedLabels": self.indexed,
                "MaxDownresLevel": self.max_downres,
            }
        )
        return out

    def alignment_error(self, lo_xyz: Any, hi_xyz: Any) -> str:
        """The 400 message of a misaligned POST (``PutLabels``)."""
        return (
            f'cannot store labels for data "{self.name}" in non-block aligned geometry '
            f"{go_point(lo_xyz)} -> {go_point(hi_xyz)}"
        )

    def serve(self, req: Request, ctx: Ctx) -> Response:
        """Answer one request (see :mod:`.labelmap_api`)."""
        from napari_connecto.testing.dvid_server.labelmap_api import serve

        return serve(self, req, ctx)

    # -- mapping ----------------------------------------------------------------------------

    def label_of(self, ancestry: list[int], sv: int) -> int:
        """Body label of one supervoxel."""
        return int(self.mapping.get(sv, ancestry, sv)) if sv else 0

    def map_array(self, ancestry: list[int], svs: np.ndarray) -> np.ndarray:
        """Body labels of an array of supervoxels."""
        values, inverse = np.unique(svs, return_inverse=True)
        mapped = np.array([self.label_of(ancestry, int(v)) for v in values], np.uint64)
        return mapped[inverse].reshape(svs.shape) if len(values) else svs.copy()

    def read_volume(
        self,
        ctx: Ctx,
        scale: int,
        offset_zyx: tuple[int, ...],
        shape_zyx: tuple[int, ...],
        req: Request,
    ) -> np.ndarray:
        """Voxels at a scale, mapped to labels unless ``supervoxels=true``."""
        svs = self.grid.read(ctx.ancestry, scale, offset_zyx, shape_zyx)
        return svs if req.flag("supervoxels") else self.map_array(ctx.ancestry, svs)

    # -- label index ------------------------------------------------------------------------

    def sv_index(self, ancestry: list[int]) -> SupervoxelIndex:
        """Counts and blocks of every supervoxel, from the scale-0 blocks."""
        index = SupervoxelIndex()
        for bzyx, block in self.grid.blocks(ancestry, 0):
            for sv, count in block.counts().items():
                index.counts[sv] = index.counts.get(sv, 0) + count
                index.blocks[sv].add(bzyx)
        return index

    def supervoxels_of(self, ancestry: list[int], label: int, index: SupervoxelIndex) -> set[int]:
        """Supervoxels with voxels whose label is ``label``."""
        return {sv for sv in index.counts if self.label_of(ancestry, sv) == label}

    def members(
        self, ancestry: list[int], label: int, index: SupervoxelIndex, supervoxels: bool
    ) -> set[int]:
        """The supervoxels making up ``label`` (or ``{label}`` if it is a supervoxel query)."""
        if supervoxels:
            return {label} if index.counts.get(label) else set()
        return self.supervoxels_of(ancestry, label, index)

    def effective_max_label(self, ancestry: list[int]) -> int | None:
        """Largest recorded label of the version or its ancestors (``EffectiveMaxLabel``)."""
        found = [self.max_label[v] for v in ancestry if v in self.max_label]
        return max(found) if found else None

    def _raise_max_label(self, ctx: Ctx, label: int) -> None:
        current = self.max_label.get(ctx.version)
        if current is not None and current >= label:
            return
        inherited = self.effective_max_label(ctx.ancestry) or 0
        self.max_label[ctx.version] = max(label, inherited)
        self.max_repo_label = max(self.max_repo_label, label)

    def new_labels(self, ctx: Ctx, count: int) -> tuple[int, int]:
        """Reserve ``count`` new labels (``POST .../nextlabel/{count}``)."""
        if count <= 0:
            raise BadRequest(f"cannot request {count} new labels, must be 1 or more")
        if self.next_label:
            start, end = self.next_label + 1, self.next_label + count
            self.next_label = end
        else:
            start, end = self.max_repo_label + 1, self.max_repo_label + count
            self.max_repo_label = end
        self.max_label[ctx.version] = max(end, self.max_label.get(ctx.version, 0))
        return start, end

    def touch(self, ctx: Ctx, labels: set[int], mutid: int) -> None:
        """Record the last modification of labels (``GET .../lastmod/{label}``)."""
        info = {"mutid": mutid, "user": ctx.user, "app": ctx.app, "time": go_rfc3339(time.time())}
        for label in labels:
            if label:
                self.lastmod.put(label, ctx.version, info)

    # -- mutations --------------------------------------------------------------------------

    def write_labels(self, ctx: Ctx, offset_zyx: tuple[int, ...], array: np.ndarray) -> int:
        """Store supervoxels at scale 0, rebuild the down-res levels; returns the mutation ID."""
        before = set()
        for bzyx in self.grid.block_range(offset_zyx, array.shape):
            old = self.grid.get(ctx.ancestry, 0, bzyx)
            if old is not None:
                before.update(old.counts())
        written = self.store_voxels(ctx, offset_zyx, array)
        self._downres(ctx, written)
        top = int(array.max()) if array.size else 0
        if top:
            self._raise_max_label(ctx, top)
        mutid = ctx.repo.new_mutation_id()
        svs = before | {int(v) for v in np.unique(array) if v}
        self.touch(ctx, {self.label_of(ctx.ancestry, sv) for sv in svs}, mutid)
        return mutid

    def _downres(self, ctx: Ctx, written: list[tuple[int, int, int]]) -> None:
        block = self.grid.block
        touched = set(written)
        for scale in range(1, self.max_downres + 1):
            parents = {tuple(b // 2 for b in bzyx) for bzyx in touched}
            for pzyx in sorted(parents):
                offset = tuple(p * 2 * b for p, b in zip(pzyx, block, strict=True))
                shape = tuple(2 * b for b in block)
                hires = self.grid.read(ctx.ancestry, scale - 1, offset, shape)
                self.grid.put(ctx.version, scale, pzyx, downres_labels(hires))
            touched = parents

    def merge(self, ctx: Ctx, target: int, others: list[int]) -> int:
        """Map every supervoxel of ``others`` to ``target``; returns the mutation ID."""
        if not others:
            raise BadRequest("Error on merge: merge requested without any labels to merge")
        index = self.sv_index(ctx.ancestry)
        present = {self.label_of(ctx.ancestry, sv) for sv in index.counts}
        for label in others:
            if label not in present:
                raise BadRequest(f"Error on merge: can't merge non-existent label {label}")
        if target not in present:
            raise BadRequest(f"Error on merge: can't merge into a non-existent label {target}")
        mutid = ctx.repo.new_mutation_id()
        merged = set(others) - {target}
        svs = {sv for sv in index.counts if self.label_of(ctx.ancestry, sv) in merged}
        svs |= {sv for sv, lbl in self.mapping.items(ctx.ancestry) if lbl in merged}
        for sv in svs:
            self.mapping.put(sv, ctx.version, target)
        self.touch(ctx, {target}, mutid)
        for label in merged:
            self.lastmod.delete(label, ctx.version, ctx.ancestry)
        return mutid

    def cleave(self, ctx: Ctx, label: int, cleaved: list[int]) -> tuple[int, int]:
        """Move supervoxels of ``label`` to a new label; returns (new label, mutation ID)."""
        new_label, _ = self.new_labels(ctx, 1)
        index = self.sv_index(ctx.ancestry)
        svs = self.supervoxels_of(ctx.ancestry, label, index)
        if not svs:
            raise BadRequest(f"cannot cleave non-existent label {label}")
        for sv in cleaved:
            if sv not in svs:
                raise BadRequest(
                    f"cannot cleave supervoxel {sv}, which does not exist in label {label} "
                    f"({self.name})"
                )
        if not svs - set(cleaved):
            raise BadRequest(f"cannot cleave all supervoxels from the label {label}")
        mutid = ctx.repo.new_mutation_id()
        for sv in cleaved:
            self.mapping.put(sv, ctx.version, new_label)
        self.touch(ctx, {label, new_label}, mutid)
        return new_label, mutid

    def renumber(self, ctx: Ctx, pairs: list[tuple[int, int]]) -> int:
        """Give each ``old`` label the id ``new`` (``POST .../renumber``); returns the mutation ID.

        As in DVID, a new id must not be in use and an old one must exist; either fails
        the whole request before anything changes.
        """
        index = self.sv_index(ctx.ancestry)
        present = {self.label_of(ctx.ancestry, sv) for sv in index.counts}
        for new, old in pairs:
            if old not in present:
                raise BadRequest(f"can't renumber non-existent label {old}")
            if new in present:
                raise BadRequest(f"can't renumber {old} to label {new}, which already exists")
        mutid = ctx.repo.new_mutation_id()
        for new, old in pairs:
            for sv in self.supervoxels_of(ctx.ancestry, old, index):
                self.mapping.put(sv, ctx.version, new)
            present.add(new)
            present.discard(old)
            self.lastmod.delete(old, ctx.version, ctx.ancestry)
        self.touch(ctx, {new for new, _ in pairs}, mutid)
        return mutid

    # -- persistence ------------------------------------------------------------------------

    def dump(self, snap: Snapshot) -> dict[str, Any]:
        """Blocks, extents, mapping and label counters."""
        state = super().dump(snap)
        state.update(
            mapping=self.mapping.dump(int),
            lastmod=self.lastmod.dump(dict),
            max_label={str(k): v for k, v in self.max_label.items()},
            max_repo_label=self.max_repo_label,
            next_label=self.next_label,
        )
        return state

    def load(self, state: dict[str, Any], snap: Snapshot) -> None:
        """Restore what :meth:`dump` wrote."""
        super().load(state, snap)
        self.mapping.load(state.get("mapping", []), int, int)
        self.lastmod.load(state.get("lastmod", []), dict, int)
        self.max_label = {int(k): int(v) for k, v in state.get("max_label", {}).items()}
        self.max_repo_label = int(state.get("max_repo_label", 0))
        self.next_label = int(state.get("next_label", 0))
