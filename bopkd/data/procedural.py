"""bopkd's own procedural object models: coloured unions of boxes, cylinders and cones.

Eight objects, ids 1-8, about 100-200 mm across:

- 1-6 are clearly asymmetric (L-, T-, arrow-, hammer-, step- and lamp-like arrangements), with a
  distinct colour per part;
- 7 has one discrete symmetry (a half turn about its z axis), declared in ``symmetries_discrete``;
- 8 is a body of revolution about its z axis (a bottle), declared in ``symmetries_continuous``.

The union of the parts is computed exactly with manifold3d (a robust mesh-boolean library; open3d's
VTK booleans leave self-intersections), so every model is one closed, edge-manifold, non
self-intersecting triangle mesh; its edges are then split to at most ``edge_length`` mm so that the
vertices sample the surface densely (as BOP's models do for the vertex-based pose errors) and the
vertex colours stay crisp. Each vertex takes the colour of the part its triangles come from.

Models are centred on the centre of their axis-aligned box, in mm, with z pointing "up" (the side an
object rests on is its minimum z), and carry area-weighted vertex normals. ``models_info`` entries
follow the BOP format document (https://github.com/thodan/bop_toolkit/blob/master/docs/bop_datasets_format.md):
the diameter is the largest distance between two vertices (computed exactly, over the vertices of the
convex hull), the box is that of the vertices, discrete symmetries are 4x4 transforms (t in mm) and
continuous ones an axis with an offset in mm.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from bopkd.records import ObjectInfo, ObjectModel

#: Number of segments of every circle (even, so that half turns map the polygons onto themselves).
CIRCLE_SEGMENTS = 48


@dataclass(frozen=True)
class Part:
    """One primitive of an object.

    Attributes:
        kind: ``"box"`` or ``"cyl"`` (a cylinder, or a cone / frustum when ``r_top != r``).
        center: (3,) centre of the primitive, mm.
        size: box size (x, y, z) in mm; for a cylinder ``(r, length, r_top)`` (``r_top`` at the end
            the axis points to; 0 for a cone's apex).
        axis: cylinder axis, ``"x"``, ``"y"``, ``"z"`` or with a sign (``"-x"``).
        color: RGB colour, 0-255.
    """

    kind: str
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    color: tuple[int, int, int]
    axis: str = "z"


@dataclass(frozen=True)
class ProceduralObject:
    """The recipe of one procedural object: its parts and its declared symmetries."""

    name: str
    parts: tuple[Part, ...]
    symmetry: str = "none"  # "none", "rz180" (discrete) or "z" (continuous about z)
    notes: str = ""
    extra: dict = field(default_factory=dict)


def _box(c, s, color) -> Part:
    return Part("box", tuple(map(float, c)), tuple(map(float, s)), color)


def _cyl(c, r, length, color, axis="z", r_top=None) -> Part:
    return Part(
        "cyl",
        tuple(map(float, c)),
        (float(r), float(length), float(r if r_top is None else r_top)),
        color,
        axis,
    )


#: The catalogue, obj_id -> recipe. Parts overlap by a few mm so that their union is one solid.
PROCEDURAL_OBJECTS: dict[int, ProceduralObject] = {
    1: ProceduralObject(
        "ell",
        (
            _box((0, 0, 0), (120, 30, 30), (220, 40, 40)),
            _box((45, 44, 0), (30, 90, 30), (40, 80, 220)),
            _cyl((-40, 0, 26), 10, 26, (240, 200, 30)),
        ),
    ),
    2: ProceduralObject(
        "tee",
        (
            _box((0, 0, 0), (140, 28, 26), (40, 170, 60)),
            _box((0, -50, 0), (28, 80, 26), (250, 130, 20)),
            _cyl((86, 0, 0), 13, 36, (150, 60, 190), axis="x", r_top=0),
        ),
    ),
    3: ProceduralObject(
        "arrow",
        (
            _cyl((-5, 0, 0), 10, 110, (90, 110, 150), axis="x"),
            _cyl((72, 0, 0), 28, 56, (230, 50, 50), axis="x", r_top=0),
            _box((-48, 0, 20), (30, 4, 40), (250, 210, 40)),
            _box((-48, 18, 0), (30, 36, 4), (40, 200, 200)),
        ),
    ),
    4: ProceduralObject(
        "hammer",
        (
            _cyl((0, 0, -5), 9, 130, (150, 95, 45)),
            _box((15, 0, 70), (100, 30, 34), (200, 50, 150)),
            _cyl((-49, 0, 70), 14, 30, (40, 200, 200), axis="-x", r_top=0),
        ),
    ),
    5: ProceduralObject(
        "steps",
        (
            _box((0, 0, 0), (110, 70, 30), (30, 180, 200)),
            _box((-30, 0, 28), (50, 70, 30), (240, 110, 160)),
            _cyl((30, -15, 28), 12, 30, (20, 110, 50)),
        ),
    ),
    6: ProceduralObject(
        "lamp",
        (
            _cyl((0, 0, -48), 40, 14, (110, 70, 200)),
            _box((22, 10, 5), (16, 16, 100), (250, 220, 80)),
            _cyl((-9, 10, 50), 8, 62, (230, 90, 40), axis="-x"),
            _cyl((-40, 10, 36), 25, 30, (80, 200, 120), r_top=8),
        ),
    ),
    7: ProceduralObject(
        "twin-post block",
        (
            _box((0, 0, 0), (120, 60, 40), (0, 150, 150)),
            _cyl((35, 0, 29), 12, 22, (235, 235, 235)),
            _cyl((-35, 0, 29), 12, 22, (235, 235, 235)),
        ),
        symmetry="rz180",
        notes="a half turn about z maps it onto itself",
    ),
    8: ProceduralObject(
        "bottle",
        (
            _cyl((0, 0, -15), 32, 90, (60, 120, 220)),
            _cyl((0, 0, 43), 32, 30, (230, 230, 230), r_top=12),
            _cyl((0, 0, 66), 12, 22, (240, 180, 40)),
            _cyl((0, 0, 80), 14, 12, (200, 40, 40)),
        ),
        symmetry="z",
        notes="a body of revolution about z",
    ),
}

_AXES = {
    "x": np.array([1.0, 0, 0]),
    "y": np.array([0, 1.0, 0]),
    "z": np.array([0, 0, 1.0]),
}


def _axis_vector(axis: str) -> np.ndarray:
    sign = -1.0 if axis.startswith("-") else 1.0
    return sign * _AXES[axis.lstrip("+-")]


def _rotation_z_to(d: np.ndarray) -> np.ndarray:
    """(3, 3) rotation taking +z to the unit vector ``d`` (a coordinate axis with a sign)."""
    z = np.array([0.0, 0.0, 1.0])
    if np.allclose(d, z):
        return np.eye(3)
    if np.allclose(d, -z):
        return np.diag([1.0, -1.0, -1.0])  # half turn about x
    v = np.cross(z, d)
    s, c = np.linalg.norm(v), float(z @ d)
    Kx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + Kx + Kx @ Kx * ((1 - c) / s**2)


def _part_manifold(p: Part):
    import manifold3d as m3d

    if p.kind == "box":
        solid = m3d.Manifold.cube(p.size, True)
        M = np.eye(3)
    elif p.kind == "cyl":
        r, length, r_top = p.size
        solid = m3d.Manifold.cylinder(length, r, r_top, CIRCLE_SEGMENTS, True)
        M = _rotation_z_to(_axis_vector(p.axis))
    else:  # pragma: no cover - the catalogue only has boxes and cylinders
        raise ValueError(f"unknown part kind {p.kind!r}")
    T = np.zeros((3, 4))
    T[:, :3] = M
    T[:, 3] = p.center
    return solid.transform(T).as_original()


def vertex_normals(pts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(N, 3) unit vertex normals: the area-weighted mean of the adjacent faces' normals."""
    v0, v1, v2 = pts[faces[:, 0]], pts[faces[:, 1]], pts[faces[:, 2]]
    fn = np.cross(v1 - v0, v2 - v0)  # length = 2 * area
    n = np.zeros_like(pts)
    for k in range(3):
        np.add.at(n, faces[:, k], fn)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return n / np.where(norm > 0, norm, 1.0)


def exact_diameter(pts: np.ndarray) -> float:
    """Largest distance (mm) between two of the points (N, 3): exact, over the convex hull's vertices."""
    from scipy.spatial import ConvexHull, QhullError
    from scipy.spatial.distance import pdist

    pts = np.asarray(pts, dtype=np.float64)
    try:
        cand = pts[ConvexHull(pts).vertices] if len(pts) > 4 else pts
    except (QhullError, ValueError):
        cand = pts
    return float(pdist(cand).max()) if len(cand) > 1 else 0.0


def model_info(
    obj_id: int, model: ObjectModel, symmetries_discrete=(), symmetries_continuous=()
) -> ObjectInfo:
    """The ``models_info.json`` entry of a model: exact diameter and the vertices' box, in mm."""
    lo = model.pts.min(axis=0)
    hi = model.pts.max(axis=0)
    return ObjectInfo(
        obj_id=int(obj_id),
        diameter=exact_diameter(model.pts),
        min_xyz=lo,
        size_xyz=hi - lo,
        symmetries_discrete=[np.asarray(s, dtype=np.float64).reshape(4, 4) for s in symmetries_discrete],
        symmetries_continuous=[
            {
                "axis": np.asarray(s["axis"], dtype=np.float64),
                "offset": np.asarray(s["offset"], dtype=np.float64),
            }
            for s in symmetries_continuous
        ],
    )


def make_object(obj_id: int, edge_length: float = 6.0) -> tuple[ObjectModel, ObjectInfo]:
    """Build procedural object ``obj_id`` (1-8): its mesh (mm, faces, normals, colours) and models_info entry.

    Built once per process and id (a fresh copy is returned each time).

    Args:
        obj_id: id in :data:`PROCEDURAL_OBJECTS`.
        edge_length: longest edge after refinement, mm.
    """
    model, info = _make_object_cached(int(obj_id), float(edge_length))
    copy = ObjectModel(model.pts.copy(), model.faces.copy(), model.normals.copy(), model.colors.copy())
    return copy, info


@functools.lru_cache(maxsize=64)
def _make_object_cached(obj_id: int, edge_length: float) -> tuple[ObjectModel, ObjectInfo]:
    if obj_id not in PROCEDURAL_OBJECTS:
        raise KeyError(f"no procedural object {obj_id}; ids are {sorted(PROCEDURAL_OBJECTS)}")
    spec = PROCEDURAL_OBJECTS[obj_id]
    solids = [_part_manifold(p) for p in spec.parts]
    part_of_original = {s.original_id(): i for i, s in enumerate(solids)}
    union = solids[0]
    for s in solids[1:]:
        union = union + s
    union = union.refine_to_length(float(edge_length))
    mesh = union.to_mesh()
    pts = np.asarray(mesh.vert_properties, dtype=np.float64)[:, :3]
    faces = np.asarray(mesh.tri_verts, dtype=np.int64).reshape(-1, 3)
    # Triangles come in runs, one per original part (run_index counts triangle-vertex indices).
    run_index = np.asarray(mesh.run_index, dtype=np.int64) // 3
    run_part = [part_of_original[int(o)] for o in np.asarray(mesh.run_original_id)]
    face_part = np.empty(len(faces), np.int64)
    for k, part in enumerate(run_part):
        face_part[run_index[k] : run_index[k + 1]] = part
    # A vertex takes the colour of the lowest-numbered part among its triangles (seams get one side).
    vert_part = np.full(len(pts), len(spec.parts), np.int64)
    for k in range(3):
        np.minimum.at(vert_part, faces[:, k], face_part)
    palette = np.array([p.color for p in spec.parts] + [(128, 128, 128)], dtype=np.uint8)
    colors = palette[vert_part]
    # Centre on the box centre (symmetry axes through x = y = 0 stay there: only z moves for 7 and 8).
    centre = 0.5 * (pts.min(axis=0) + pts.max(axis=0))
    centre[np.abs(centre) < 1e-9] = 0.0
    pts = pts - centre
    model = ObjectModel(pts=pts, faces=faces, normals=vertex_normals(pts, faces), colors=colors)
    sym_d: list[np.ndarray] = []
    sym_c: list[dict] = []
    if spec.symmetry == "rz180":
        sym_d.append(np.diag([-1.0, -1.0, 1.0, 1.0]))
    elif spec.symmetry == "z":
        sym_c.append({"axis": np.array([0.0, 0.0, 1.0]), "offset": np.zeros(3)})
    return model, model_info(obj_id, model, sym_d, sym_c)


def procedural_models(
    obj_ids: list[int] | tuple[int, ...] | None = None, edge_length: float = 6.0
) -> dict[int, tuple[ObjectModel, ObjectInfo]]:
    """Build several procedural objects (all of :data:`PROCEDURAL_OBJECTS` by default)."""
    ids = sorted(PROCEDURAL_OBJECTS) if obj_ids is None else [int(i) for i in obj_ids]
    return {i: make_object(i, edge_length) for i in ids}
