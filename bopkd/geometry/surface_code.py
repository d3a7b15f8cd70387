"""Hierarchical binary surface encoding of an object model, as in ZebraPose.

ZebraPose (Su et al., "ZebraPose: Coarse to Fine Surface Encoding for 6DoF Object Pose Estimation", CVPR
2022, Sec. 3, the hierarchical surface encoding; code: suyz526/ZebraPose,
``Binary_Code_GT_Generator/Generate_Mesh_with_GT_Color/Generate_Mesh_with_GT_Color.cpp``) splits the model's
vertices recursively into two groups of equal size by balanced 2-means, ``bits`` times (16 for LM-O). The
group chosen at level ``i`` is bit ``i`` of a vertex's code, bit 0 the coarsest split, so that the code read
as an integer is ``sum_i b_i 2^(bits-1-i)`` (``generate_point_id_class_result`` there: weight ``2^(n-i-1)``).
Each finest group (a "class") stands for one 3D point, here the mean of its vertices (there the mean of
the vertices of the faces labelled with the class, ``generate_class_corres_point_result``), which turns a predicted code into a 2D-3D correspondence.

Balanced 2-means is written here because neither scipy (``kmeans2`` is not balanced) nor the other
dependencies offer it: an alternating minimisation of the within-group squared distances under the
constraint that the two halves have ``ceil(n/2)`` and ``floor(n/2)`` points. For fixed centroids ``c0, c1``
the best balanced assignment sorts the points by ``|x - c0|^2 - |x - c1|^2 = 2 x.(c1 - c0) + const`` and
gives the lower half to ``c0`` (exchanging any two points across the median cannot lower the sum), so each
step is a median split of the projection on the centroids' axis; the first split is at the median of the
projection on the group's principal axis. ZebraPose balances OpenCV's unbalanced ``cv::kmeans`` result
afterwards by moving the points of the larger cluster nearest to the other centroid, which approximates
the same median split. All groups of a level are processed at once with NumPy (sorting by
``(group, projection)``), there is no random initialisation, and ties are broken by vertex index, so the
encoding is deterministic.

A group of 0 or 1 vertex cannot be split: its vertex keeps bit 0 for the remaining levels (a lone
vertex makes the ``ceil(1/2) = 1`` point half). ZebraPose upsamples each mesh beyond ``2^16`` vertices
beforehand (``Binary_Code_GT_Generator/Generate_GT.md``, step 4.1: MeshLab's midpoint subdivision for
reconstructed meshes, uniform resampling for CAD ones) so that the finest classes
are populated; :func:`encode_model` does the same with open3d's midpoint subdivision (every triangle into 4,
the surface unchanged) until the mesh has ``min_vertices`` vertices. The default ``2**16`` was chosen by
the decode error measured on LM-O ``obj_000001`` (5841 vertices, diameter ~102 mm; samples spread
uniformly over the surface, each given the code of its triangle's vertex with the largest barycentric
weight, 16 bits): mean / 95th percentile / max error 0.71 / 1.14 / 2.0 mm without subdivision (5841
codes used), 0.36 / 0.57 / 0.96 mm at one subdivision (23k vertices), 0.24 / 0.45 / 0.80 mm at two (93k
vertices, all 65536 codes used: the default's result), 0.23 / 0.41 / 19.6 mm at three (374k; balanced
clusters of ~6 vertices start to join distant surface patches); encoding took 0.16 / 0.54 / 2.5 / 13 s
(measured on a shared 2-core machine).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bopkd.errors import BopkdError
from bopkd.records import ObjectModel

DEFAULT_BITS = 16
DEFAULT_MIN_VERTICES = 2**16
DEFAULT_ITERATIONS = 10  # the iteration cap of ZebraPose's cv::kmeans call (TermCriteria COUNT 10)
MAX_BITS = 24  # points holds 2**bits rows: 2**24 * 12 bytes = 200 MB is the most that makes sense


@dataclass
class SurfaceCode:
    """The hierarchical surface code of one object model.

    Attributes:
        codes: (V,) int64 code of each vertex of the encoded mesh, in ``[0, 2**bits)``; bit ``i`` (the
            split of level ``i``, 0 the coarsest) is ``(code >> (bits - 1 - i)) & 1``.
        bits: number of levels.
        points: (2**bits, 3) float32 mm: the centroid of each finest cluster; for a code no vertex has,
            the centroid of its deepest non-empty ancestor cluster (a code prefix).
        vertices: (V, 3) float32 mm, the vertices of the encoded (possibly subdivided) mesh.
        faces: (F, 3) int64 triangles of the encoded mesh; hit triangle ids of a rendering refer to these.
    """

    codes: np.ndarray
    bits: int
    points: np.ndarray
    vertices: np.ndarray
    faces: np.ndarray

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(N,) integer codes -> (N, 3) float32 model points in mm (``points[codes]``)."""
        codes = np.asarray(codes)
        if codes.size and (codes.min() < 0 or codes.max() >= len(self.points)):
            raise BopkdError(
                f"surface code out of range [0, {len(self.points)}) for {self.bits} bits: "
                "give codes made with the same number of bits"
            )
        return self.points[codes.astype(np.int64)]

    def model(self) -> ObjectModel:
        """The encoded mesh, to register in a :class:`bopkd.geometry.render.Renderer` for code targets."""
        return ObjectModel(pts=self.vertices.astype(np.float64), faces=self.faces)


def code_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Integer codes (...) -> (bits, ...) uint8 bit planes, plane 0 the coarsest (most significant) bit."""
    codes = np.asarray(codes, dtype=np.int64)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64).reshape((bits,) + (1,) * codes.ndim)
    return ((codes[None] >> shifts) & 1).astype(np.uint8)


def bits_to_codes(planes: np.ndarray) -> np.ndarray:
    """(bits, ...) 0/1 bit planes, plane 0 the most significant -> (...) int64 integer codes."""
    planes = np.asarray(planes).astype(np.int64)
    bits = planes.shape[0]
    weights = (np.int64(1) << np.arange(bits - 1, -1, -1, dtype=np.int64)).reshape(
        (bits,) + (1,) * (planes.ndim - 1)
    )
    return (planes * weights).sum(axis=0)


def _balanced_halves(group: np.ndarray, proj: np.ndarray, n_groups: int) -> np.ndarray:
    """(V,) 0/1: per group, the ``ceil(n/2)`` points of lowest ``proj`` get 0, the others 1.

    Ties in ``proj`` go by point index (``np.lexsort`` is stable), which keeps the split deterministic.
    """
    order = np.lexsort((proj, group))
    counts = np.bincount(group, minlength=n_groups)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    g_sorted = group[order]
    rank = np.arange(len(group)) - starts[g_sorted]
    half = np.empty(len(group), np.int64)
    half[order] = (rank >= (counts[g_sorted] + 1) // 2).astype(np.int64)
    return half


def _group_means(pts: np.ndarray, label: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Means (n, 3) and counts (n,) of ``pts`` (V, 3) per ``label`` in ``[0, n)``; empty labels get 0."""
    counts = np.bincount(label, minlength=n).astype(np.float64)
    sums = np.stack([np.bincount(label, weights=pts[:, k], minlength=n) for k in range(3)], axis=1)
    return sums / np.maximum(counts, 1.0)[:, None], counts


def _principal_axes(pts: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """(n_groups, 3) unit principal axis (largest covariance eigenvector) of each group's points.

    The sign is fixed (largest-magnitude component positive) so that results do not depend on LAPACK.
    """
    mean, counts = _group_means(pts, group, n_groups)
    d = pts - mean[group]
    cov = np.empty((n_groups, 3, 3))
    for a in range(3):
        for b in range(a, 3):
            cov[:, a, b] = cov[:, b, a] = np.bincount(group, weights=d[:, a] * d[:, b], minlength=n_groups)
    axes = np.linalg.eigh(cov)[1][:, :, -1]
    big = np.take_along_axis(axes, np.abs(axes).argmax(axis=1)[:, None], axis=1)
    return axes * np.where(big < 0, -1.0, 1.0)


def _split_level(pts: np.ndarray, group: np.ndarray, n_groups: int, iterations: int) -> np.ndarray:
    """One level of balanced 2-means in every group at once: (V,) 0/1 half of each point."""
    axes = _principal_axes(pts, group, n_groups)
    half = _balanced_halves(group, np.einsum("vk,vk->v", pts, axes[group]), n_groups)
    for _ in range(iterations):
        cent, _ = _group_means(pts, 2 * group + half, 2 * n_groups)
        axis = cent[1::2] - cent[0::2]  # c1 - c0 per group
        new = _balanced_halves(group, np.einsum("vk,vk->v", pts, axis[group]), n_groups)
        if np.array_equal(new, half):
            break
        half = new
    return half


def hierarchical_codes(
    pts: np.ndarray, bits: int = DEFAULT_BITS, iterations: int = DEFAULT_ITERATIONS
) -> np.ndarray:
    """(V, 3) points (mm) -> (V,) int64 codes of ``bits`` recursive balanced 2-means splits.

    At level ``l`` the vertices with equal ``l``-bit prefix form a group, split into halves of
    ``ceil(n/2)`` (bit 0) and ``floor(n/2)`` (bit 1) points (ZebraPose, Sec. 3). Groups of one point
    therefore put it in half 0, and a vertex keeps bit 0 from the level where it is alone.
    """
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
    if not 1 <= bits <= MAX_BITS:
        raise BopkdError(f"surface code bits = {bits}: choose between 1 and {MAX_BITS} (ZebraPose uses 16)")
    pts = pts - pts.mean(axis=0)  # projections on c1 - c0 lose less precision about the object's centre
    codes = np.zeros(len(pts), np.int64)
    for level in range(bits):
        codes = 2 * codes + _split_level(pts, codes, 2**level, iterations)
    return codes


def cluster_points(pts: np.ndarray, codes: np.ndarray, bits: int) -> np.ndarray:
    """(2**bits, 3) float32: centroid of each finest cluster, else of its deepest non-empty ancestor.

    Args:
        pts: (V, 3) mm vertices; codes: (V,) their codes.
    """
    pts = np.asarray(pts, dtype=np.float64)
    leaf = np.arange(2**bits, dtype=np.int64)
    out = np.zeros((2**bits, 3))
    for level in range(bits + 1):  # deeper levels overwrite their ancestors where they hold vertices
        shift = bits - level
        mean, counts = _group_means(pts, codes >> shift, 2**level)
        prefix = leaf >> shift
        have = counts[prefix] > 0
        out[have] = mean[prefix[have]]
    return out.astype(np.float32)


def densify(pts: np.ndarray, faces: np.ndarray, min_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """Midpoint-subdivide a mesh (each triangle into 4, shape unchanged) until it has ``min_vertices``.

    Args:
        pts: (V, 3) mm; faces: (F, 3) triangles.
    Returns:
        ``(pts (V', 3) float64 mm, faces (F', 3) int64)``, the input when it already has enough vertices.
    """
    import open3d as o3d

    pts = np.asarray(pts, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(pts) >= min_vertices or len(faces) == 0:
        return pts, faces
    # V' ~ V + E ~ V + 1.5 F per subdivision (shared edge midpoints); count the rounds from that estimate.
    v, f, rounds = float(len(pts)), float(len(faces)), 0
    while v < min_vertices:
        v, f, rounds = v + 1.5 * f, 4.0 * f, rounds + 1
    mesh = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(pts), o3d.utility.Vector3iVector(faces.astype(np.int32))
    )
    mesh = mesh.subdivide_midpoint(number_of_iterations=rounds)
    return np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.triangles, dtype=np.int64)


def encode_model(
    model: ObjectModel,
    bits: int = DEFAULT_BITS,
    min_vertices: int = DEFAULT_MIN_VERTICES,
    iterations: int = DEFAULT_ITERATIONS,
) -> SurfaceCode:
    """Encode a mesh: densify it to ``min_vertices`` (0: never), then code its vertices (ZebraPose, Sec. 3).

    Args:
        model: vertices (V, 3) mm and triangle faces (F, 3); a model without faces encodes its points.
        bits: levels of the hierarchy (16 in ZebraPose).
        min_vertices: subdivide the mesh until it has at least this many vertices.
        iterations: at most this many balanced 2-means steps per level after the principal-axis split.
    """
    pts, faces = densify(model.pts, model.faces, int(min_vertices))
    codes = hierarchical_codes(pts, bits, iterations)
    return SurfaceCode(
        codes=codes,
        bits=int(bits),
        points=cluster_points(pts, codes, bits),
        vertices=pts.astype(np.float32),
        faces=faces,
    )
