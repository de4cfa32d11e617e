"""Checks of an untrusted ReIDIndex folder before anything in it is believed or allocated.

The folder's author also writes ``metadata.json`` and its checksum, so the checksum only catches
accidental damage. Two checks stand against a hostile or broken folder:

* :func:`._index_store.parse_metadata` checks every field of ``metadata.json`` (type, range,
  presence, and the lengths of the per-item lists against ``count``) and that ``index_file``
  is a plain file name, so it cannot point outside the folder.
* :func:`inspect_faiss_file` walks the FAISS file's structure (the layout of FAISS's
  ``index_write.cpp``) for the four index types ReIDIndex writes, *before* ``faiss.read_index``
  runs: every count and length prefix is checked against the bytes left in the file, against
  the metadata and against the other fields, so FAISS is only handed files whose allocations
  the file's own size pays for. Any other FAISS type is refused.

Layout notes (little-endian, as FAISS writes on x86-64 and ARM): every index starts with a
four-character code and the common header ``d`` (int32), ``ntotal`` (int64), two unused int64
fields, ``is_trained`` (one byte) and ``metric_type`` (int32; a float ``metric_arg`` follows for
metric types above 1, which ReIDIndex never uses). A vector is a uint64 element count followed
by the elements; a flat index's vectors are one such vector counted in 4-byte units.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

__all__ = ["IndexFormatError", "FaissFileInfo", "inspect_faiss_file", "MAX_DIM", "METRIC_CODES"]


class IndexFormatError(ValueError):
    """An index directory is missing a file, damaged, inconsistent, or from an unsupported
    format version; the message names the file and the field."""


# FAISS metric codes in the header.
METRIC_INNER_PRODUCT, METRIC_L2 = 0, 1
METRIC_CODES = {"cosine": METRIC_INNER_PRODUCT, "euclidean": METRIC_L2}
# Four-character codes of the index types ReIDIndex writes, per metadata "type".
FOURCC = {
    "Flat": (b"IxFI", b"IxF2", b"IxFl"),
    "IVFFlat": (b"IwFl",),
    "IVFPQ": (b"IwPQ",),
    "HNSW": (b"IHNf",),
}
_FLAT = FOURCC["Flat"]
# FAISS's own upper bound on a header's dimension.
MAX_DIM = 1 << 20
# IVF-PQ with the L2 metric rebuilds a (nlist x M x 2^nbits) float table at load time that the
# file does not store. It is legitimately a few times the file's size; a file whose table would
# be larger than this many times its size (or 256 MiB, whichever is more) is refused.
PQ_TABLE_FACTOR = 8
PQ_TABLE_FLOOR = 256 << 20
# Floats read at once when checking stored vectors (16 MiB).
_FLOAT_CHUNK = 1 << 22


@dataclass
class FaissFileInfo:
    """What the FAISS file says about itself, read without FAISS.

    Attributes:
        fourcc: the top-level index's four-character code.
        d: vector dimension.
        ntotal: number of vectors.
        metric_type: FAISS metric code (0 inner product, 1 L2).
        pq_m: IVF-PQ sub-quantizers (None for other types).
        pq_nbits: IVF-PQ bits per code (None for other types).
    """

    fourcc: str
    d: int
    ntotal: int
    metric_type: int
    pq_m: int | None = None
    pq_nbits: int | None = None


class _Cursor:
    """Reads a FAISS file field by field, refusing any length the rest of the file cannot hold."""

    def __init__(self, f: BinaryIO, size: int, label: str) -> None:
        self.f, self.size, self.label, self.pos = f, size, label, 0
        f.seek(0)

    def fail(self, message: str) -> IndexFormatError:
        return IndexFormatError(f"{self.label}: {message}")

    @property
    def left(self) -> int:
        return self.size - self.pos

    def read(self, n: int, field: str) -> bytes:
        if n > self.left:
            raise self.fail(f"{field} needs {n} bytes at offset {self.pos}, but the file ends "
                            f"at {self.size}")
        data = self.f.read(n)
        if len(data) != n:  # the file shrank under us
            raise self.fail(f"{field}: short read at offset {self.pos}")
        self.pos += n
        return data

    def skip(self, n: int, field: str) -> None:
        if n > self.left:
            raise self.fail(f"{field} needs {n} bytes at offset {self.pos}, but the file ends "
                            f"at {self.size}")
        self.pos += n
        self.f.seek(self.pos)

    def scalar(self, fmt: str, field: str) -> int:
        return struct.unpack("<" + fmt, self.read(struct.calcsize(fmt), field))[0]

    def count(self, elem_size: int, field: str, expected: int | None = None) -> int:
        """A vector's element count, checked against the bytes left (and ``expected``)."""
        n = self.scalar("Q", f"{field} length")
        if n > self.left // elem_size:
            raise self.fail(f"{field} claims {n} entries ({n * elem_size} bytes), more than the "
                            f"{self.left} bytes left in the file")
        if expected is not None and n != expected:
            raise self.fail(f"{field} has {n} entries, expected {expected}")
        return n

    def array(self, n: int, dtype: str, field: str) -> np.ndarray:
        itemsize = np.dtype(dtype).itemsize
        return np.frombuffer(self.read(n * itemsize, field), dtype=dtype)

    def finite_floats(self, n: int, field: str) -> None:
        """Reads ``n`` float32 values in bounded chunks and refuses NaN or inf among them.

        Stored NaN vectors would never be found and would make every distance to them NaN,
        which :meth:`ReIDIndex.add` refuses; a file must not bring them in either.
        """
        done = 0
        while done < n:
            m = min(n - done, _FLOAT_CHUNK)
            bad = np.flatnonzero(~np.isfinite(self.array(m, "<f4", field)))
            if len(bad):
                raise self.fail(f"{field} hold NaN or inf (float {done + int(bad[0])})")
            done += m


def inspect_faiss_file(
    f: BinaryIO,
    size: int,
    label: str,
    *,
    index_type: str,
    dim: int,
    metric: str,
    count: int,
) -> FaissFileInfo:
    """Walks a FAISS index file and checks it against its metadata, without FAISS.

    Nothing larger than the file's own arrays is read or allocated: counts are checked against
    the bytes left before anything is read, so a 1 KB file that claims 1.6e9 vectors is refused
    after reading its 37-byte header.

    Args:
        f: the file, opened for binary reading (read from its start).
        size: the file's size in bytes.
        label: the file's name for messages.
        index_type: the metadata's ``type`` (``"Flat"``, ``"IVFFlat"``, ``"IVFPQ"``, ``"HNSW"``).
        dim: the metadata's ``dim``.
        metric: the metadata's ``metric`` (``"cosine"`` or ``"euclidean"``).
        count: the metadata's ``count``.

    Returns:
        What the file says about itself.

    Raises:
        IndexFormatError: the file is truncated, has trailing bytes, is of another FAISS type,
            or disagrees with the metadata or with itself; the message names the field.
    """
    c = _Cursor(f, size, label)
    expect = {"dim": dim, "metric": METRIC_CODES[metric], "count": count}
    fourcc = c.read(4, "index type code")
    if fourcc not in FOURCC[index_type]:
        known = {code: name for name, codes in FOURCC.items() for code in codes}
        found = known.get(fourcc, f"an unsupported FAISS type {fourcc!r}")
        raise c.fail(f"the file holds {found} but the metadata's type is {index_type!r}")
    info = _header(c, fourcc, expect)
    if fourcc in _FLAT:
        _flat_payload(c, info, "vectors")
    elif fourcc == b"IHNf":
        _hnsw(c, info)
    else:
        _ivf(c, info)
    if c.left:
        raise c.fail(f"{c.left} unexpected bytes after the index at offset {c.pos}")
    return info


def _header(c: _Cursor, fourcc: bytes, expect: dict | None, what: str = "index") -> FaissFileInfo:
    d = c.scalar("i", f"{what} dimension (d)")
    ntotal = c.scalar("q", f"{what} vector count (ntotal)")
    if not 1 <= d <= MAX_DIM:
        raise c.fail(f"{what} dimension (d) {d} is outside [1, {MAX_DIM}]")
    if ntotal < 0:
        raise c.fail(f"{what} vector count (ntotal) {ntotal} is negative")
    # Every stored vector costs at least this many bytes in the file (a PQ code and its id are at
    # least 9), so a count the file cannot hold is refused before anything else is read.
    min_bytes = 9 if fourcc == b"IwPQ" else 4 * d
    if ntotal > c.size // min_bytes:
        raise c.fail(f"the {what} header claims {ntotal} vectors of dimension {d}, which need at "
                     f"least {ntotal * min_bytes} bytes, but the file has {c.size}")
    if expect is not None:
        if d != expect["dim"]:
            raise c.fail(f"{what} dimension (d) is {d}, the metadata's dim is {expect['dim']}")
        if ntotal != expect["count"]:
            raise c.fail(f"{what} holds {ntotal} vectors (ntotal), the metadata's count is "
                         f"{expect['count']}")
    c.skip(16, f"{what} header")  # two unused int64 fields
    # ReIDIndex saves only trained indexes; an untrained one would fail at the first search.
    is_trained = c.scalar("B", f"{what} is_trained flag")
    if is_trained != 1:
        raise c.fail(f"{what} is_trained flag is {is_trained}, not 1 (a trained index)")
    metric = c.scalar("i", f"{what} metric type")
    if metric not in (METRIC_INNER_PRODUCT, METRIC_L2):
        raise c.fail(f"{what} metric type {metric} is neither inner product (0) nor L2 (1)")
    if fourcc in (b"IxFI", b"IxF2") and metric != (fourcc == b"IxF2"):
        raise c.fail(f"{what} is {fourcc.decode()} but its header says metric type {metric}")
    if expect is not None and metric != expect["metric"]:
        names = {METRIC_INNER_PRODUCT: "inner product (cosine)", METRIC_L2: "L2 (euclidean)"}
        raise c.fail(f"{what} uses the {names[metric]} metric, the metadata's metric says "
                     f"{names[expect['metric']]}")
    return FaissFileInfo(fourcc.decode("ascii"), d, ntotal, metric)


def _flat_payload(c: _Cursor, info: FaissFileInfo, what: str) -> None:
    # Stored as one vector of 4-byte units: ntotal * d floats.
    n = c.count(4, f"{what} data", expected=info.ntotal * info.d)
    c.finite_floats(n, f"{what} data")


def _nested_flat(c: _Cursor, what: str, d: int, ntotal: int, metric: int) -> None:
    """A flat index inside another one (IVF coarse quantizer, HNSW storage)."""
    fourcc = c.read(4, f"{what} type code")
    if fourcc not in _FLAT:
        raise c.fail(f"{what} is {fourcc!r}, not a flat index")
    info = _header(c, fourcc, None, what)
    if (info.d, info.ntotal, info.metric_type) != (d, ntotal, metric):
        raise c.fail(f"{what} holds {info.ntotal} vectors of dimension {info.d} with metric "
                     f"{info.metric_type}, expected {ntotal} of dimension {d} with metric {metric}")
    _flat_payload(c, info, what)


def _hnsw(c: _Cursor, info: FaissFileInfo) -> None:
    n = info.ntotal
    c.skip(8 * c.count(8, "HNSW assign_probas"), "HNSW assign_probas")
    c.skip(4 * c.count(4, "HNSW cum_nneighbor_per_level"), "HNSW cum_nneighbor_per_level")
    c.skip(4 * c.count(4, "HNSW levels", expected=n), "HNSW levels")
    c.skip(8 * c.count(8, "HNSW offsets", expected=n + 1), "HNSW offsets")
    c.skip(4 * c.count(4, "HNSW neighbors"), "HNSW neighbors")
    # entry_point, max_level, efConstruction, efSearch, one unused int (FAISS validates the
    # graph itself when it reads it: levels, offsets and neighbour ids in range).
    c.skip(20, "HNSW parameters")
    _nested_flat(c, "HNSW storage", info.d, n, info.metric_type)


def _ivf(c: _Cursor, info: FaissFileInfo) -> None:
    nlist = c.scalar("Q", "IVF nlist")
    c.scalar("Q", "IVF nprobe")
    # The coarse quantizer holds nlist centroids, so the file pays for nlist (and for every
    # per-list allocation FAISS makes from it).
    if nlist < 1 or nlist > c.left // (4 * info.d):
        raise c.fail(f"IVF nlist {nlist} is not backed by the {c.left} bytes left in the file")
    _nested_flat(c, "IVF coarse quantizer", info.d, nlist, info.metric_type)
    if c.scalar("B", "IVF direct map type") != 0:
        raise c.fail("IVF direct map is set; ReIDIndex never writes one")
    c.count(8, "IVF direct map", expected=0)
    if info.fourcc == "IwFl":
        code_size = 4 * info.d
    else:
        code_size = _pq(c, info, nlist)
    _inverted_lists(c, info, nlist, code_size)


def _pq(c: _Cursor, info: FaissFileInfo, nlist: int) -> int:
    by_residual = c.scalar("B", "IVF-PQ by_residual flag")
    code_size = c.scalar("Q", "IVF-PQ code size")
    d = c.scalar("Q", "PQ dimension")
    m = c.scalar("Q", "PQ sub-quantizers (M)")
    nbits = c.scalar("Q", "PQ bits per code (nbits)")
    if by_residual > 1:
        raise c.fail(f"IVF-PQ by_residual flag is {by_residual}, not 0 or 1")
    if d != info.d:
        raise c.fail(f"PQ dimension {d} differs from the index dimension {info.d}")
    if not 1 <= m <= d or d % m:
        raise c.fail(f"PQ sub-quantizers (M) {m} must divide the dimension {d}")
    if not 1 <= nbits <= 16:
        raise c.fail(f"PQ bits per code (nbits) {nbits} is outside [1, 16]")
    if code_size != (m * nbits + 7) // 8:
        raise c.fail(f"IVF-PQ code size {code_size} does not match M={m}, nbits={nbits}")
    ksub = 1 << nbits
    c.finite_floats(c.count(4, "PQ centroids", expected=d * ksub), "PQ centroids")
    table = nlist * m * ksub * 4
    if info.metric_type == METRIC_L2 and by_residual and table > max(
        PQ_TABLE_FLOOR, PQ_TABLE_FACTOR * c.size
    ):
        raise c.fail(f"IVF-PQ would need a {table}-byte precomputed table (nlist {nlist}, M {m}, "
                     f"nbits {nbits}), out of proportion to the file's {c.size} bytes")
    info.pq_m, info.pq_nbits = m, nbits
    return code_size


def _inverted_lists(c: _Cursor, info: FaissFileInfo, nlist: int, code_size: int) -> None:
    if c.read(4, "inverted lists type code") != b"ilar":
        raise c.fail("inverted lists are not stored in the file (type code is not 'ilar')")
    if c.scalar("Q", "inverted lists nlist") != nlist:
        raise c.fail(f"inverted lists count differs from the IVF nlist {nlist}")
    if c.scalar("Q", "inverted lists code size") != code_size:
        raise c.fail(f"inverted lists code size differs from {code_size}")
    per_vector = code_size + 8  # code and int64 id
    kind = c.read(4, "inverted lists size format")
    if kind == b"full":
        sizes = c.array(c.count(8, "inverted list sizes", expected=nlist), "<u8", "list sizes")
        lists = np.flatnonzero(sizes)
        sizes = sizes[lists]
    elif kind == b"sprs":
        pairs = c.array(c.count(8, "inverted list sizes"), "<u8", "inverted list sizes")
        if len(pairs) % 2:
            raise c.fail("sparse inverted list sizes have an odd length")
        lists, sizes = pairs[0::2], pairs[1::2]
        if len(lists) and (lists.max() >= nlist or (np.diff(lists.astype(np.int64)) <= 0).any()):
            raise c.fail("sparse inverted list numbers are out of range or out of order")
    else:
        raise c.fail(f"inverted lists size format {kind!r} is neither 'full' nor 'sprs'")
    if len(sizes) and int(sizes.max()) > c.left // per_vector:
        raise c.fail(f"an inverted list claims {int(sizes.max())} vectors, more than the "
                     f"{c.left} bytes left in the file hold")
    total = int(sizes.sum(dtype=np.float64))  # each size is bounded above: no overflow
    if total != info.ntotal:
        raise c.fail(f"inverted lists hold {total} vectors, the header's ntotal is {info.ntotal}")
    ids = []
    for n in sizes.tolist():
        if info.fourcc == "IwFl":  # the codes are the vectors themselves
            c.finite_floats(n * code_size // 4, "inverted list vectors")
        else:
            c.skip(n * code_size, "inverted list codes")
        ids.append(c.array(n, "<i8", "inverted list ids"))
    # Each id is a position in the metadata lists: all of 0..ntotal-1, each exactly once.
    all_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    if len(all_ids) and (all_ids.min() < 0 or all_ids.max() >= info.ntotal):
        raise c.fail(f"inverted list ids fall outside [0, {info.ntotal})")
    if len(all_ids) and np.bincount(all_ids, minlength=info.ntotal).max() > 1:
        raise c.fail("inverted list ids repeat an id")
