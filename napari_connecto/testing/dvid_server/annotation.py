"""The ``annotation`` data type (synapses, bookmarks): ``datatype/annotation``.

Elements are versioned one by one, keyed by position. ``label/{label}`` needs
a sync to a ``labelmap``; instead of DVID's denormalized label index the test
server looks every element's position up in the synced labelmap at request
time, which is what that index is kept equal to.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from napari_connecto.testing.dvid_server.instances import Instance, register
from napari_connecto.testing.dvid_server.protocol import (
    BadAPIRequest,
    BadRequest,
    Request,
    Response,
    json_response,
    parse_point,
    parse_uint,
)
from napari_connecto.testing.dvid_server.versioned import VersionedStore

if TYPE_CHECKING:
    from napari_connecto.testing.dvid_server.instances import Ctx
    from napari_connecto.testing.dvid_server.snapshot import Snapshot

__all__ = ["Annotation", "normalize_element"]

KINDS = ("Unknown", "PostSyn", "PreSyn", "Gap", "Note")
RELS = ("UnknownRelationship", "PostSynTo", "PreSynTo", "ConvergentTo", "GroupedWith")
DEFAULT_BLOCK = 64

Point = tuple[int, ...]


def _point(value: Any, what: str) -> Point:
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise BadRequest(f"bad {what} {value!r}: expected [x, y, z]")
    try:
        return (int(value[0]), int(value[1]), int(value[2]))
    except (TypeError, ValueError):
        raise BadRequest(f"bad {what} {value!r}: expected integers") from None


def normalize_element(raw: Any) -> dict[str, Any]:
    """An element as DVID re-marshals it: ``Pos``, ``Kind``, ``Tags``, ``Prop``, ``Rels``."""
    if not isinstance(raw, dict):
        raise BadRequest(f"bad element {raw!r}: expected a JSON object")
    kind = raw.get("Kind", "Unknown")
    if kind not in KINDS:
        raise BadRequest(f"Unknown element type in JSON: {json.dumps(kind)}")
    tags = raw.get("Tags")
    prop = raw.get("Prop")
    rels = raw.get("Rels")
    if tags is not None and not isinstance(tags, list):
        raise BadRequest("element Tags must be a list of strings")
    if prop is not None and not isinstance(prop, dict):
        raise BadRequest("element Prop must be an object of strings")
    out_rels = None
    if rels is not None:
        out_rels = []
        for rel in rels:
            kind_rel = rel.get("Rel", "UnknownRelationship") if isinstance(rel, dict) else None
            if kind_rel not in RELS:
                raise BadRequest(f"Unknown relationship type in JSON: {json.dumps(kind_rel)}")
            out_rels.append({"Rel": kind_rel, "To": list(_point(rel.get("To"), "relationship To"))})
    return {
        "Pos": list(_point(raw.get("Pos"), "element Pos")),
        "Kind": kind,
        "Tags": None if tags is None else [str(t) for t in tags],
        "Prop": None if prop is None else {str(k): str(v) for k, v in prop.items()},
        "Rels": out_rels,
    }


def _without_rels(elem: dict[str, Any]) -> dict[str, Any]:
    return {k: elem[k] for k in ("Pos", "Kind", "Tags", "Prop")}


@register
class Annotation(Instance):
    """Point annotations with kinds, tags, properties and relationships."""

    typename = "annotation"
    type_url = "github.com/janelia-flyem/dvid/datatype/annotation"
    type_version = "0.1"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.elements: VersionedStore[Point, dict[str, Any]] = VersionedStore()

    # -- helpers ----------------------------------------------------------------------------

    def block_size(self) -> tuple[int, ...]:
        """Block size of the synced labelmap, else 64^3 (as DVID)."""
        lm = self._labelmap()
        return tuple(lm.block_xyz) if lm is not None else (DEFAULT_BLOCK,) * 3

    def _labelmap(self) -> Any:
        from napari_connecto.testing.dvid_server.labelmap import Labelmap

        for name in self.syncs:
            inst = self.repo.instances.get(name)
            if isinstance(inst, Labelmap):
                return inst
        return None

    def _block_of(self, pos: Point) -> Point:
        bx, by, bz = (p // b for p, b in zip(pos, self.block_size(), strict=True))
        return (bz, by, bx)

    def sorted_elements(self, ancestry: list[int]) -> list[dict[str, Any]]:
        """Visible elements in block z, y, x order, insertion order within a block."""
        elems = [e for _, e in self.elements.items(ancestry)]
        return sorted(elems, key=lambda e: self._block_of(tuple(e["Pos"])))

    # -- seeding API ------------------------------------------------------------------------

    def add(self, version: int, ancestry: list[int], elements: list[Any]) -> None:
        """Add or replace elements (by ``Pos``) in ``version``."""
        for raw in elements:
            elem = normalize_element(raw)
            self.elements.put(tuple(elem["Pos"]), version, elem)

    # -- HTTP -------------------------------------------------------------------------------

    def serve(self, req: Request, ctx: Ctx) -> Response:
        """Answer ``info``, ``sync``, ``elements``, ``element``, ``move``, ``label``, ``tag``."""
        parts = req.parts
        if len(parts) < 4:
            raise BadRequest("Incomplete API request")
        keyword = parts[3]
        if keyword == "info":
            return json_response(self.info(ctx.ancestry))
        if keyword == "sync":
            return self.set_syncs(req)
        if keyword == "elements":
            return self._elements(req, ctx)
        if keyword == "element":
            if req.method != "DELETE":
                raise BadRequest("Only DELETE action is available on 'element' endpoint.")
            if len(parts) < 5:
                raise BadRequest("Must include coordinate after DELETE on 'element' endpoint.")
            self.delete(ctx, parse_point(parts[4]))
            return Response()
        if keyword == "move":
            if req.method != "POST":
                raise BadRequest("Only POST action is available on 'move' endpoint.")
            if len(parts) < 6:
                raise BadRequest("Must include 'from' and 'to' coordinate after 'move' endpoint.")
            self.move(ctx, parse_point(parts[4]), parse_point(parts[5]))
            return Response()
        if keyword in ("label", "tag"):
            return self._query(req, ctx, keyword)
        raise BadAPIRequest(self.name, self.typename)

    def _elements(self, req: Request, ctx: Ctx) -> Response:
        parts = req.parts
        if req.method == "GET":
            if len(parts) < 6:
                raise BadRequest("Expect size and offset to follow 'elements' in GET request")
            size, offset = parse_point(parts[4]), parse_point(parts[5])
            inside = [
                e
                for e in self.sorted_elements(ctx.ancestry)
                if all(o <= p < o + s for p, o, s in zip(e["Pos"], offset, size, strict=True))
            ]
            return json_response(inside)
        if req.method == "POST":
            body = req.json_body("elements")
            if not isinstance(body, list):
                raise BadRequest("POST /elements expects a JSON array of elements")
            self.add(ctx.version, ctx.ancestry, body)
            return Response()
        raise BadRequest("Only GET or POST action is available on 'elements' endpoint.")

    def _query(self, req: Request, ctx: Ctx, keyword: str) -> Response:
        parts = req.parts
        if req.method != "GET":
            raise BadRequest(f"Only GET action is available on '{keyword}' endpoint.")
        if len(parts) < 5:
            what = "label" if keyword == "label" else "tag string"
            raise BadRequest(f"Must include {what} after '{keyword}' endpoint.")
        rels = req.query.get("relationships") in ("true", "verbose")
        elems = self.sorted_elements(ctx.ancestry)
        if keyword == "label":
            label = parse_uint(parts[4])
            if label == 0:
                raise BadRequest(
                    "Label 0 is protected background value and cannot be used for query."
                )
            elems = self._in_label(ctx, elems, label)
        else:
            elems = [e for e in elems if parts[4] in (e["Tags"] or [])]
        return json_response(elems if rels else [_without_rels(e) for e in elems])

    def _in_label(self, ctx: Ctx, elems: list[dict[str, Any]], label: int) -> list[dict[str, Any]]:
        lm = self._labelmap()
        if lm is None:
            return []
        anc = lm.ancestry(ctx.version)
        out = []
        for e in elems:
            x, y, z = e["Pos"]
            sv = lm.grid.read(anc, 0, (z, y, x), (1, 1, 1))[0, 0, 0]
            if sv and lm.label_of(anc, int(sv)) == label:
                out.append(e)
        return out

    # -- mutations --------------------------------------------------------------------------

    def _partners(self, ctx: Ctx, elem: dict[str, Any]) -> list[Point]:
        pos = tuple(elem["Pos"])
        block = self._block_of(pos)
        same_block = [p for p in self.elements.keys(ctx.ancestry) if self._block_of(p) == block]
        listed = [tuple(r["To"]) for r in elem["Rels"] or []]
        return list(dict.fromkeys([*listed, *same_block]))

    def _rewrite_rels(self, ctx: Ctx, points: list[Point], old: Point, new: Point | None) -> None:
        for p in points:
            partner = self.elements.get(p, ctx.ancestry)
            if partner is None or not partner["Rels"]:
                continue
            rels = []
            for r in partner["Rels"]:
                if tuple(r["To"]) != old:
                    rels.append(r)
                elif new is not None:
                    rels.append({"Rel": r["Rel"], "To": list(new)})
            if rels != partner["Rels"]:
                self.elements.put(p, ctx.version, {**partner, "Rels": rels})

    def delete(self, ctx: Ctx, pos: Point) -> None:
        """``DELETE .../element/{x}_{y}_{z}``: the element and references to it."""
        elem = self.elements.get(pos, ctx.ancestry)
        if elem is None:
            raise BadRequest("Did not find element ({},{},{}) in datastore".format(*pos))
        partners = self._partners(ctx, elem)
        self.elements.delete(pos, ctx.version, ctx.ancestry)
        self._rewrite_rels(ctx, partners, pos, None)

    def move(self, ctx: Ctx, src: Point, dst: Point) -> None:
        """``POST .../move/{from}/{to}``: move an element and re-point references."""
        elem = self.elements.get(src, ctx.ancestry)
        if elem is None:
            raise BadRequest("Did not find moved element ({},{},{}) in datastore".format(*src))
        partners = self._partners(ctx, elem)
        self.elements.delete(src, ctx.version, ctx.ancestry)
        self.elements.put(dst, ctx.version, {**elem, "Pos": list(dst)})
        self._rewrite_rels(ctx, partners, src, dst)

    # -- persistence ------------------------------------------------------------------------

    def dump(self, snap: Snapshot) -> dict[str, Any]:
        """Elements as JSON."""
        return {"elements": self.elements.dump(lambda e: e)}

    def load(self, state: dict[str, Any], snap: Snapshot) -> None:
        """Restore elements."""
        self.elements.load(state.get("elements", []), dict, tuple)
