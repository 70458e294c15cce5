"""Synthetic serial-section EM of neuropil: raw, neuron segmentation and synapses.

Pure numpy/scipy, deterministic per seed. Neurites are tubes through z: each is
a seed whose in-plane position, orientation, elongation and size drift smoothly
from section to section; every section is an anisotropic, additively weighted
Voronoi diagram of those seeds in a smoothly warped plane, so boundaries are
curved and cells change shape between sections. Every voxel belongs to a cell
(no background, no 0): a membrane voxel belongs to the nearest cell, i.e.
membranes are split between the two cells they separate, as in CREMI ground
truth. Synapses are painted where they are placed: a dark T-bar and a vesicle
cloud in the presynaptic cell, a postsynaptic density in each partner.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = [
    "DEFAULT_SHAPE",
    "POST",
    "PRE",
    "RESOLUTION",
    "SampleData",
    "Synapses",
    "generate_sample",
]

logger = logging.getLogger(__name__)

DEFAULT_SHAPE: tuple[int, int, int] = (32, 384, 384)
"""Default ``(z, y, x)`` shape in voxels."""
RESOLUTION: tuple[float, float, float] = (40.0, 4.0, 4.0)
"""Voxel size in nm, z, y, x (CREMI's anisotropy)."""
PRE = "presynaptic_site"
POST = "postsynaptic_site"

_SPACING = 38.0  # mean distance between neurite centres, px
_BLOCK = 8  # block size of the coarse candidate search, px
_CANDIDATES = 8  # seeds kept per block for the exact search


@dataclass(frozen=True, slots=True, eq=False)
class Synapses:
    """Synaptic sites (CREMI annotation layout), positions in nm."""

    ids: np.ndarray
    """``(N,)`` uint64 annotation ids."""
    types: tuple[str, ...]
    """``"presynaptic_site"`` or ``"postsynaptic_site"``, one per id."""
    locations: np.ndarray
    """``(N, 3)`` float64 z, y, x in nm (voxel ``i`` is at ``i * resolution``)."""
    neurons: np.ndarray
    """``(N,)`` uint64 segment id of the cell each site lies in."""
    partners: np.ndarray
    """``(M, 2)`` uint64 ``(pre_id, post_id)`` pairs."""
    resolution: tuple[float, float, float] = RESOLUTION
    """Voxel size in nm, z, y, x."""


@dataclass(frozen=True, slots=True, eq=False)
class SampleData:
    """One generated sample: raw EM, neuron segmentation and synapses."""

    raw: np.ndarray
    """``(z, y, x)`` uint8 electron micrograph."""
    segmentation: np.ndarray
    """``(z, y, x)`` uint64 neuron ids; every voxel belongs to a cell."""
    synapses: Synapses
    """Synaptic sites and their partners."""
    seed: int
    """The random seed it was generated from."""
    resolution: tuple[float, float, float] = RESOLUTION
    """Voxel size in nm, z, y, x."""

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape in voxels, z, y, x."""
        return tuple(self.raw.shape)  # type: ignore[return-value]


@dataclass(frozen=True, slots=True, eq=False)
class _Cells:
    """Neurite seeds per section: positions, orientation, elongation and size."""

    y: np.ndarray  # (Z, N) px
    x: np.ndarray  # (Z, N) px
    theta: np.ndarray  # (Z, N) rad, direction of elongation
    elong: np.ndarray  # (N,) aspect ratio >= 1
    weight: np.ndarray  # (Z, N) additive weight, px (bigger = larger profile)
    tone: np.ndarray  # (N,) cytoplasm brightness offset


@dataclass(frozen=True, slots=True, eq=False)
class Tessellation:
    """Per-voxel result of the Voronoi search, used for rendering and synapse placement."""

    label: np.ndarray
    """``(z, y, x)`` int32 index of the nearest seed."""
    depth: np.ndarray
    """``(z, y, x)`` float32 in-plane distance (px) to the nearest voxel of another
    cell's boundary; 0 on the two voxel rows either side of a boundary."""


def generate_sample(shape: tuple[int, int, int] = DEFAULT_SHAPE, seed: int = 0) -> SampleData:
    """Generate a synthetic serial-section EM volume of neuropil.

    Parameters
    ----------
    shape : tuple of int
        ``(z, y, x)`` size in voxels; each at least 4 (z) and 64 (y, x).
    seed : int
        Random seed; the same seed and shape always give the same sample.

    Returns
    -------
    SampleData
        Raw uint8, uint64 segmentation (ids up to ``2**64 - 2``, many above
        ``2**53``) and about 40-80 synaptic contacts for the default shape.

    Raises
    ------
    ValueError
        If ``shape`` is too small.
    """
    shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
    if len(shape) != 3 or shape[0] < 4 or min(shape[1:]) < 64:
        raise ValueError(f"shape must be (z>=4, y>=64, x>=64), got {shape}")
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    cells = _make_cells(rng, shape)
    tess = _tessellate(rng, cells, shape)
    ids = _cell_ids(rng, cells.elong.size)
    base = _cytoplasm(rng, cells, tess)
    membrane = 112.0 + 18.0 * _smooth_noise(rng, shape, 30.0, 2.0)
    dark = membrane * np.exp(-((tess.depth / 1.5) ** 2))
    synapses = _paint_organelles(_Canvas(rng, tess, cells.theta, dark), ids)
    raw = _finish(rng, base - dark)
    seg = ids[tess.label]
    seg.flags.writeable = False
    raw.flags.writeable = False
    logger.info("generated sample %s seed %d in %.2f s", shape, seed, time.perf_counter() - start)
    return SampleData(raw, seg, synapses, int(seed))


def _make_cells(rng: np.random.Generator, shape: tuple[int, int, int]) -> _Cells:
    """Seeds on a jittered hexagonal grid, moved by a smooth flow plus wobble per section."""
    nz, ny, nx = shape
    pad = 2.0 * _SPACING
    rows = []
    for r, yy in enumerate(np.arange(-pad, ny + pad, _SPACING * 0.866)):
        xs = np.arange(-pad + (r % 2) * _SPACING / 2, nx + pad, _SPACING)
        rows.append(np.stack([np.full_like(xs, yy), xs], axis=1))
    p0 = np.concatenate(rows) + rng.normal(0.0, 0.22 * _SPACING, (sum(map(len, rows)), 2))
    n = len(p0)
    # Velocity (px/section): a smooth field (neighbouring neurites run together) + own drift.
    vel = rng.normal(0.0, 0.5, 2) + rng.normal(0.0, 0.35, (n, 2))
    for _ in range(3):
        k = rng.normal(0.0, 2 * np.pi / 400.0, 2)
        vel += rng.normal(0.0, 0.6, 2) * np.sin(p0 @ k + rng.uniform(0, 2 * np.pi))[:, None]
    oblique = rng.random(n) < 0.1
    angle = rng.uniform(0, 2 * np.pi, n)
    speed = rng.uniform(2.0, 4.5, n)
    vel[oblique] = speed[oblique, None] * np.stack([np.sin(angle), np.cos(angle)], 1)[oblique]
    t = np.arange(nz, dtype=np.float64)[:, None]
    period = rng.uniform(10.0, 30.0, (2, n))
    phase = rng.uniform(0, 2 * np.pi, (2, n))
    wob = rng.uniform(1.0, 5.0, (2, 1, n)) * np.sin(
        2 * np.pi * t / period[:, None] + phase[:, None]
    )
    y = p0[:, 0] + t * vel[:, 0] + wob[0]
    x = p0[:, 1] + t * vel[:, 1] + wob[1]
    elong = np.clip(np.exp(rng.normal(0.3, 0.25, n)), 1.0, 2.6)
    elong[oblique] = rng.uniform(2.4, 3.4, oblique.sum())
    theta0 = rng.uniform(0, np.pi, n)
    theta0[oblique] = np.arctan2(vel[oblique, 1], vel[oblique, 0])
    theta = theta0 + t * rng.normal(0.0, 0.04, n) * ~oblique
    size = np.clip(rng.gamma(2.0, 5.0, n), 0.0, 36.0)
    swell = rng.uniform(0.0, 6.0, n) * np.sin(2 * np.pi * t / rng.uniform(8, 24, n) + phase[0])
    tone = rng.normal(0.0, 9.0, n)
    f32 = np.float32
    return _Cells(
        y.astype(f32), x.astype(f32), theta.astype(f32), elong.astype(f32),
        (size + swell).astype(f32), tone.astype(f32),
    )  # fmt: skip


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int, int], sigma_yx: float, sigma_z: float = 0.0
) -> np.ndarray:
    """Unit-variance Gaussian-correlated noise, made at low resolution and upsampled linearly."""
    nz, ny, nx = shape
    f = max(1, int(sigma_yx // 2))
    lo = rng.standard_normal((nz, -(-ny // f) + 1, -(-nx // f) + 1)).astype(np.float32)
    lo = ndimage.gaussian_filter(lo, (sigma_z, sigma_yx / f, sigma_yx / f), mode="wrap")
    lo /= lo.std() + 1e-6
    if f == 1:
        return np.ascontiguousarray(lo[:, :ny, :nx])
    return _lerp_matrix(ny, lo.shape[1], f) @ lo @ _lerp_matrix(nx, lo.shape[2], f).T


def _lerp_matrix(n: int, n_lo: int, f: int) -> np.ndarray:
    """``(n, n_lo)`` linear-interpolation weights from a grid ``f`` times coarser."""
    t = np.clip((np.arange(n) + 0.5) / f - 0.5, 0, n_lo - 1)
    i0 = np.minimum(t.astype(np.int64), n_lo - 2)
    w = (t - i0).astype(np.float32)
    m = np.zeros((n, n_lo), np.float32)
    m[np.arange(n), i0] = 1.0 - w
    m[np.arange(n), i0 + 1] = w
    return m


def _tessellate(
    rng: np.random.Generator, cells: _Cells, shape: tuple[int, int, int]
) -> Tessellation:
    """Nearest seed per voxel in a warped plane (coarse-to-fine search), then boundary depth."""
    nz, ny, nx = shape
    warp_y = 9.0 * _smooth_noise(rng, shape, 22.0, 1.5)
    warp_x = 9.0 * _smooth_noise(rng, shape, 22.0, 1.5)
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    by = np.minimum(np.arange(_BLOCK // 2, ny + _BLOCK // 2, _BLOCK), ny - 1)
    bx = np.minimum(np.arange(_BLOCK // 2, nx + _BLOCK // 2, _BLOCK), nx - 1)
    label = np.empty(shape, np.int32)
    depth = np.empty(shape, np.float32)
    for z in range(nz):
        py, px = yy + warp_y[z], xx + warp_x[z]
        coarse = _distances(cells, z, py[np.ix_(by, bx)][..., None], px[np.ix_(by, bx)][..., None])
        cand = np.argpartition(coarse, _CANDIDATES - 1, axis=-1)[..., :_CANDIDATES]
        cand = np.repeat(np.repeat(cand, _BLOCK, 0), _BLOCK, 1)[:ny, :nx]
        d = _distances(cells, z, py[..., None], px[..., None], cand)
        label[z] = np.take_along_axis(cand, np.argmin(d, axis=-1)[..., None], -1)[..., 0]
        edge = np.zeros((ny, nx), bool)
        edge[1:] |= label[z, 1:] != label[z, :-1]
        edge[:-1] |= label[z, :-1] != label[z, 1:]
        edge[:, 1:] |= label[z, :, 1:] != label[z, :, :-1]
        edge[:, :-1] |= label[z, :, :-1] != label[z, :, 1:]
        depth[z] = ndimage.distance_transform_edt(~edge)
    return Tessellation(label, depth)


def _distances(
    cells: _Cells, z: int, py: np.ndarray, px: np.ndarray, idx: np.ndarray | None = None
) -> np.ndarray:
    """Weighted anisotropic distance from points ``(py, px)`` to seeds ``idx`` in section ``z``."""
    sel = slice(None) if idx is None else idx
    dy, dx = py - cells.y[z][sel], px - cells.x[z][sel]
    th = cells.theta[z][sel]
    c, s = np.cos(th), np.sin(th)
    along, across = dy * c + dx * s, dx * c - dy * s
    e = cells.elong[sel]
    return np.sqrt(along * along / e + across * across * e) - cells.weight[z][sel]


def _cell_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unique random uint64 ids: half below 2**32, half above 2**53; never 0 or 2**64-1."""
    small = rng.integers(1, 2**32, n, dtype=np.uint64)
    big = rng.integers(2**53 + 1, 2**64 - 2, n, dtype=np.uint64, endpoint=True)
    ids = np.where(rng.random(n) < 0.5, small, big)
    while np.unique(ids).size < n:  # astronomically rare
        ids = np.unique(ids)
        ids = np.concatenate([ids, rng.integers(1, 2**32, n - ids.size, dtype=np.uint64)])
    return ids


def _cytoplasm(rng: np.random.Generator, cells: _Cells, tess: Tessellation) -> np.ndarray:
    """Mid-grey cytoplasm: per-cell tone plus low- and mid-frequency texture."""
    shape = tess.label.shape
    base = 176.0 + cells.tone[tess.label]
    base += 9.0 * _smooth_noise(rng, shape, 14.0, 1.0)
    base += 6.0 * _smooth_noise(rng, shape, 2.0, 0.0)
    return base


def _finish(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Blur (PSF), per-section brightness, shot and read noise; to uint8."""
    nz = image.shape[0]
    image = ndimage.gaussian_filter(image, (0, 0.9, 0.9))
    gain = rng.normal(1.0, 0.04, nz).astype(np.float32)[:, None, None]
    offset = rng.normal(0.0, 6.0, nz).astype(np.float32)[:, None, None]
    image = image * gain + offset
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    image += noise * np.sqrt(np.clip(image, 0.0, None) * 0.6 + 25.0)
    return np.clip(image, 0, 255).astype(np.uint8)


_Site = tuple[int, int, int]  # z, y, x voxel
_Contact = tuple[_Site, int, list[tuple[_Site, int]]]  # pre site, pre cell, [(post site, cell)]


@dataclass(frozen=True, slots=True, eq=False)
class _Canvas:
    """Darkness added to the image, with the tessellation that confines what is painted."""

    rng: np.random.Generator
    tess: Tessellation
    theta: np.ndarray  # (Z, N) orientation of each cell's profile
    dark: np.ndarray  # (Z, Y, X) float32, subtracted from the cytoplasm

    def paint(
        self, z: int, centre: tuple[float, float], patch: np.ndarray, *, cell: int,
        on_membrane: bool = False,
    ) -> None:  # fmt: skip
        """Add ``patch`` centred on ``centre`` of section ``z``, only inside ``cell``."""
        h, w = patch.shape
        y0, x0 = round(centre[0]) - h // 2, round(centre[1]) - w // 2
        ys = slice(max(y0, 0), min(y0 + h, self.dark.shape[1]))
        xs = slice(max(x0, 0), min(x0 + w, self.dark.shape[2]))
        if ys.start >= ys.stop or xs.start >= xs.stop or not 0 <= z < self.dark.shape[0]:
            return
        weight = (self.tess.label[z, ys, xs] == cell).astype(np.float32)
        if not on_membrane:  # fade out towards membranes
            weight *= 1.0 - np.exp(-((self.tess.depth[z, ys, xs] / 1.5) ** 2))
        self.dark[z, ys, xs] += (
            patch[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0] * weight
        )

    def vesicles(self, cell: int, points: np.ndarray, wanted: int) -> None:
        """Up to ``wanted`` non-overlapping vesicles at candidate z, y, x ``points`` in ``cell``."""
        nz, ny, nx = self.tess.label.shape
        placed: list[tuple[int, int, int]] = []
        for z, y, x in np.round(points).astype(int).tolist():
            if len(placed) >= wanted:
                break
            if not (0 <= z < nz and 0 <= y < ny and 0 <= x < nx):
                continue
            if self.tess.label[z, y, x] != cell or self.tess.depth[z, y, x] < 4.5:
                continue
            if any(q[0] == z and (q[1] - y) ** 2 + (q[2] - x) ** 2 < 72 for q in placed):
                continue
            self.paint(z, (y, x), _vesicle(self.rng), cell=cell)
            placed.append((z, y, x))


def _paint_organelles(canvas: _Canvas, ids: np.ndarray) -> Synapses:
    """Place synapses; paint them, mitochondria and vesicle clouds; return the sites."""
    nz, ny, nx = canvas.dark.shape
    scale = np.sqrt(nz * ny * nx / np.prod(DEFAULT_SHAPE))
    contacts = _place_synapses(canvas, int(np.clip(round(60 * scale), 6, 80)))
    for contact in contacts:
        _paint_synapse(canvas, contact)
    for _ in range(int(np.clip(round(24 * scale), 3, 40))):
        _paint_mitochondrion(canvas)
    for _ in range(int(np.clip(round(20 * scale), 3, 40))):
        _paint_vesicle_cluster(canvas)
    return _annotations(contacts, ids)


def _place_synapses(canvas: _Canvas, n_target: int) -> list[_Contact]:
    """Pick membrane voxels at random and turn them into contacts at least 160 nm apart."""
    rng, tess = canvas.rng, canvas.tess
    nz, ny, nx = tess.label.shape
    r = 28
    found: list[_Contact] = []
    centres = np.empty((0, 3))
    for _ in range(n_target * 60):
        if len(found) >= n_target:
            break
        z, y, x = (int(v) for v in rng.integers((1, r, r), (nz - 1, ny - r, nx - r)))
        if tess.depth[z, y, x] > 0.5:
            continue
        here = np.array([z * RESOLUTION[0] / RESOLUTION[1], y, x])
        if len(centres) and np.min(np.sum((centres - here) ** 2, axis=1)) < 40.0**2:
            continue
        contact = _contact(rng, tess, (z, y, x), r)
        if contact is not None:
            found.append(contact)
            centres = np.vstack([centres, here])
    return found


def _contact(rng: np.random.Generator, tess: Tessellation, at: _Site, r: int) -> _Contact | None:
    """A presynaptic site a few voxels inside the cell at ``at`` and 1-3 partner sites."""
    z, y, x = at
    win = (z, slice(y - r, y + r + 1), slice(x - r, x + r + 1))
    lab, depth = tess.label[win], tess.depth[win]
    oy, ox = np.mgrid[-r : r + 1, -r : r + 1]
    pre_cell = int(lab[r, r])
    inside = (lab == pre_cell) & (depth >= 3.5)
    if not inside.any():
        return None
    i = int(np.argmin(np.where(inside, np.hypot(oy, ox), np.inf)))
    dpre = np.hypot(oy - oy.flat[i], ox - ox.flat[i])
    options = []
    for cell in np.unique(lab[(lab != pre_cell) & (depth >= 3.0) & (dpre <= 20.0)]):
        j = int(np.argmin(np.where((lab == cell) & (depth >= 3.0), dpre, np.inf)))
        options.append((float(dpre.flat[j]), int(cell), (z, y + oy.flat[j], x + ox.flat[j])))
    if not options:
        return None
    options.sort()
    k = min(len(options), int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25])))
    posts = [((int(s[0]), int(s[1]), int(s[2])), cell) for _, cell, s in options[:k]]
    return (z, y + int(oy.flat[i]), x + int(ox.flat[i])), pre_cell, posts


def _annotations(contacts: list[_Contact], ids: np.ndarray) -> Synapses:
    """CREMI-style annotations: sequential ids, one pre and its posts per contact."""
    sites: list[_Site] = []
    types: list[str] = []
    cells: list[int] = []
    partners: list[tuple[int, int]] = []
    for pre, pre_cell, posts in contacts:
        pre_id = len(sites) + 1
        sites.append(pre), types.append(PRE), cells.append(pre_cell)
        for post, post_cell in posts:
            sites.append(post), types.append(POST), cells.append(post_cell)
            partners.append((pre_id, len(sites)))
    return Synapses(
        ids=np.arange(1, len(sites) + 1, dtype=np.uint64),
        types=tuple(types),
        locations=np.array(sites, np.float64).reshape(-1, 3) * np.array(RESOLUTION),
        neurons=ids[np.array(cells, np.int64)],
        partners=np.array(partners, np.uint64).reshape(-1, 2),
    )


def _blob(sigma_u: float, sigma_v: float, angle: float, amount: float) -> np.ndarray:
    """An oriented Gaussian blob, long axis ``u`` at ``angle`` (rad from the y axis)."""
    h = int(3 * max(sigma_u, sigma_v)) + 1
    oy, ox = np.mgrid[-h : h + 1, -h : h + 1].astype(np.float32)
    u = oy * np.cos(angle) + ox * np.sin(angle)
    v = ox * np.cos(angle) - oy * np.sin(angle)
    return amount * np.exp(-0.5 * ((u / sigma_u) ** 2 + (v / sigma_v) ** 2))


def _vesicle(rng: np.random.Generator) -> np.ndarray:
    """A small dark ring (synaptic vesicle, ~35 nm across)."""
    r0 = rng.uniform(3.2, 4.6)
    oy, ox = np.mgrid[-7:8, -7:8].astype(np.float32)
    r = np.hypot(oy, ox)
    return 65.0 * np.exp(-(((r - r0) / 1.1) ** 2)) + 12.0 * (r < r0)


def _paint_synapse(canvas: _Canvas, contact: _Contact) -> None:
    """T-bar and vesicle cloud in the presynaptic cell; a density in each partner."""
    (z, py, px), pre_cell, posts = contact
    normal = np.zeros(2)
    for (_, qy, qx), post_cell in posts:
        n = np.array([qy - py, qx - px], float)
        n /= np.linalg.norm(n) + 1e-9
        normal += n
        psd = _blob(10.0, 2.6, float(np.arctan2(n[1], n[0])) + np.pi / 2, 115.0)
        for dz, f in zip(range(-2, 3), (0.35, 0.7, 1.0, 0.7, 0.35), strict=True):
            canvas.paint(z + dz, (qy, qx), f * psd, cell=post_cell, on_membrane=True)
    normal /= np.linalg.norm(normal) + 1e-9
    for dz, f in ((-1, 0.5), (0, 1.0), (1, 0.5)):
        tbar = _blob(3.5, 3.0, 0.0, 110.0 * f)
        canvas.paint(z + dz, (py, px), tbar, cell=pre_cell, on_membrane=True)
    rng = canvas.rng
    wanted = int(rng.integers(24, 44))
    k = 5 * wanted
    yx = np.array([py, px]) - np.outer(rng.uniform(3, 30, k), normal)
    yx += np.outer(rng.normal(0, 12, k), [-normal[1], normal[0]])
    canvas.vesicles(pre_cell, np.column_stack([z + rng.integers(-2, 3, k), yx]), wanted)


def _paint_vesicle_cluster(canvas: _Canvas) -> None:
    """A loose cloud of vesicles somewhere inside a random cell (a bouton)."""
    rng, tess = canvas.rng, canvas.tess
    z, y, x = (int(v) for v in rng.integers((0, 0, 0), tess.label.shape))
    if tess.depth[z, y, x] < 10.0:
        return
    k = 4 * (wanted := int(rng.integers(8, 22)))
    yx = np.array([y, x]) + rng.normal(0, 14, (k, 2))
    points = np.column_stack([z + rng.integers(-1, 2, k), yx])
    canvas.vesicles(int(tess.label[z, y, x]), points, wanted)


def _mito(a: float, b: float, angle: float, phase: float) -> np.ndarray:
    """A mitochondrion cross-section: dark double membrane, lighter matrix with cristae."""
    h = int(a + 5)
    oy, ox = np.mgrid[-h : h + 1, -h : h + 1].astype(np.float32)
    u = oy * np.cos(angle) + ox * np.sin(angle)
    v = ox * np.cos(angle) - oy * np.sin(angle)
    edge = (np.sqrt((u / a) ** 2 + (v / b) ** 2) - 1.0) * b
    inside = 1.0 / (1.0 + np.exp(np.clip(edge / 0.8, -30, 30)))
    cristae = (0.5 + 0.5 * np.cos(2 * np.pi * u / 9.0 + phase + 0.4 * np.sin(v / 3.0))) ** 6
    return 100.0 * np.exp(-((edge / 1.5) ** 2)) + inside * (20.0 + 45.0 * cristae)


def _paint_mitochondrion(canvas: _Canvas) -> None:
    """A mitochondrion running along a wide neurite for a few sections."""
    rng, tess = canvas.rng, canvas.tess
    nz, ny, nx = tess.label.shape
    z0 = int(rng.integers(0, nz))
    cell = int(tess.label[z0, rng.integers(20, ny - 20), rng.integers(20, nx - 20)])
    half, aspect, phase = rng.uniform(1.5, 4.5), rng.uniform(1.3, 2.4), rng.uniform(0, 6.3)
    for z in range(max(0, z0 - int(half)), min(nz, z0 + int(half) + 1)):
        mask = np.where(tess.label[z] == cell, tess.depth[z], 0.0)
        j = int(np.argmax(mask))
        if (depth := float(mask.flat[j])) < 12.0:
            continue
        taper = np.sqrt(max(0.05, 1.0 - ((z - z0) / (half + 1.0)) ** 2))
        b = min(0.6 * depth, 15.0) * taper
        patch = _mito(b * aspect, b, float(canvas.theta[z, cell]), phase + z)
        canvas.paint(z, divmod(j, nx), patch, cell=cell)
