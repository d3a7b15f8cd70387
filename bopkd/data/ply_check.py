"""Check that a PLY file holds what its header declares (before any reader trusts it).

A truncated model (an interrupted download or extraction) can still be parsed in part: open3d reads the
vertices before the cut and warns, and a reader that counts on the header reads short arrays. Scores
computed from such a model are wrong without any sign. :func:`check_ply` reads the header (PLY 1.0:
``ascii``, ``binary_little_endian``, ``binary_big_endian``; scalar and list properties of the types the
PLY format names) and checks the body against it: the vertex element is present with at least one vertex,
and the data of every element (vertices, faces and any other) is complete. For binary files that is the
byte size the header implies (the list lengths stored in the file included); for ASCII files the number of
values (one per scalar property, a length and that many values per list). Bytes or values after the
declared elements are allowed, as the toolkit's ``inout.load_ply`` and open3d ignore them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bopkd.errors import BopkdError

#: The PLY property types and their numpy codes.
PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}

FIX = "re-download or re-extract the models (bopkd download DATASET --parts models)"


class _Broken(Exception):
    pass


def _header(data: bytes) -> tuple[str, list[tuple[str, int, list[tuple]]], int]:
    """``(format, [(element, count, properties)], offset of the body)``; properties are ``("scalar",
    type)`` or ``("list", count type, item type)``."""
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise _Broken("not a PLY file, or its header has no end_header")
    nl = data.find(b"\n", end)
    body = len(data) if nl < 0 else nl + 1
    fmt, elements = None, []
    for line in data[:end].decode("ascii", "replace").splitlines()[1:]:
        tok = line.split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        try:
            if tok[0] == "format":
                fmt = tok[1]
            elif tok[0] == "element":
                elements.append((tok[1], int(tok[2]), []))
            elif tok[0] == "property" and tok[1] == "list":
                elements[-1][2].append(("list", PLY_TYPES[tok[2]], PLY_TYPES[tok[3]]))
            elif tok[0] == "property":
                elements[-1][2].append(("scalar", PLY_TYPES[tok[1]]))
        except (IndexError, KeyError, ValueError):
            raise _Broken(f"malformed header line {line.strip()!r}") from None
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise _Broken(f"unknown format {fmt!r} in the header")
    counts = {name: count for name, count, _ in elements}
    if counts.get("vertex", 0) <= 0:
        raise _Broken("the header declares no vertices")
    return fmt, elements, body


def _binary_size(body: bytes, elements, endian: str) -> int | None:
    """Bytes the declared elements take, or None when the body ends before they do."""
    off = 0
    for _, count, props in elements:
        if all(p[0] == "scalar" for p in props):
            off += count * sum(np.dtype(p[1]).itemsize for p in props)
            continue
        # Fixed-size records if every list has the length of the first record's lists (all triangles).
        fields, lengths = [], []
        pos = off
        for k, p in enumerate(props):
            if p[0] == "scalar":
                fields.append((f"s{k}", endian + p[1]))
                pos += np.dtype(p[1]).itemsize
                continue
            if pos + np.dtype(p[1]).itemsize > len(body):
                return None
            n = int(np.frombuffer(body, endian + p[1], 1, pos)[0]) if count else 0
            lengths.append((f"n{k}", n))
            fields += [(f"n{k}", endian + p[1]), (f"v{k}", endian + p[2], (n,))]
            pos += np.dtype(p[1]).itemsize + n * np.dtype(p[2]).itemsize
        rec = np.dtype(fields)
        if off + count * rec.itemsize <= len(body):
            arr = np.frombuffer(body, rec, count, off)
            if all(np.all(arr[f] == n) for f, n in lengths):
                off += count * rec.itemsize
                continue
        off = _walk_binary(body, off, count, props, endian)
        if off is None:
            return None
    return off


def _walk_binary(body: bytes, off: int, count: int, props, endian: str) -> int | None:
    """Offset after ``count`` records of mixed list lengths, read one by one; None past the end."""
    for _ in range(count):
        for p in props:
            size = np.dtype(p[1]).itemsize
            if off + size > len(body):
                return None
            if p[0] == "list":
                n = int(np.frombuffer(body, endian + p[1], 1, off)[0])
                size += n * np.dtype(p[2]).itemsize
            off += size
    return off if off <= len(body) else None


def _ascii_values(body: bytes, elements) -> tuple[int, int]:
    """``(values the declared elements need, values in the file)``, counting list lengths as stored."""
    tokens = body.split()
    need = 0
    for _, count, props in elements:
        if all(p[0] == "scalar" for p in props):
            need += count * len(props)
            continue
        for _ in range(count):
            for p in props:
                if need >= len(tokens):
                    return need + 1, len(tokens)
                n = 0
                if p[0] == "list":
                    try:
                        n = int(float(tokens[need]))
                    except ValueError:
                        raise _Broken(f"a list length {tokens[need][:20]!r} is not a number") from None
                need += 1 + n
    return need, len(tokens)


def check_ply(path: str | Path) -> None:
    """Raise :class:`BopkdError` (one line: the file, what is wrong, the fix) unless the PLY is complete."""
    path = Path(path)
    data = path.read_bytes()
    try:
        fmt, elements, start = _header(data)
        counts = ", ".join(f"{n} {c}" for n, c, _ in elements)
        body = data[start:]
        if fmt == "ascii":
            need, have = _ascii_values(body, elements)
            if need > have:
                raise _Broken(
                    f"truncated: the header declares {counts} but the file ends after {have} values"
                )
        else:
            need = _binary_size(body, elements, "<" if fmt == "binary_little_endian" else ">")
            if need is None:
                raise _Broken(
                    f"truncated: the header declares {counts} but the file holds only {len(body)} bytes of data"
                )
    except _Broken as e:
        raise BopkdError(f"{path}: broken PLY model ({e}); {FIX}") from None
