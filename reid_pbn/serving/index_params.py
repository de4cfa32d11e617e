"""Index parameters sized to the gallery, so FAISS never trains on too few points.

FAISS's k-means wants at least 39 training points per centroid and prints "please provide at
least N training points" below that; with too few points the centroids (IVF lists, PQ codebooks)
are poor. :func:`choose_index` turns the type a user asks for and the gallery size into
parameters that satisfy this, and says in plain words what it changed and why: a smaller
``nlist``, fewer PQ bits, another sub-quantizer count that divides the dimension, or a simpler
index type when the gallery is too small for the asked one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["IndexChoice", "choose_index", "MIN_POINTS_PER_CENTROID", "INDEX_TYPES"]

#: FAISS's ``ClusteringParameters.min_points_per_centroid``: below this it warns.
MIN_POINTS_PER_CENTROID = 39
INDEX_TYPES = ("Flat", "IVFFlat", "IVFPQ", "HNSW")
# PQ codes below 4 bits (16 centroids per sub-space) lose too much to be worth an IVF-PQ index.
_MIN_PQ_BITS = 4
_DEFAULT_PQ_BITS = 8
_MAX_PQ_M = 64


@dataclass
class IndexChoice:
    """The index type and ``ReIDIndex`` keyword arguments chosen for a gallery.

    Attributes:
        requested: the type the user asked for.
        index_type: the type chosen (``requested`` unless the gallery is too small for it).
        params: keyword arguments for ``ReIDIndex`` (``nlist``, ``nprobe``, ``pq_m``,
            ``pq_nbits``, ``hnsw_m``), only those that apply to ``index_type``.
        notes: one sentence per change made to the request, for the user.
    """

    requested: str
    index_type: str
    params: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """A JSON-friendly copy (for provenance records)."""
        return {"requested": self.requested, "type": self.index_type,
                "params": dict(self.params), "notes": list(self.notes)}


def choose_index(
    requested: str,
    num_items: int,
    dim: int,
    *,
    nlist: int = 0,
    nprobe: int = 32,
    pq_m: int = 0,
    pq_nbits: int = 0,
    hnsw_m: int = 32,
) -> IndexChoice:
    """Sizes an index of type ``requested`` for ``num_items`` vectors of dimension ``dim``.

    Args:
        requested: ``"Flat"``, ``"IVFFlat"``, ``"IVFPQ"`` or ``"HNSW"``.
        num_items: vectors the index is trained on and holds (the gallery).
        dim: feature dimension.
        nlist: inverted lists wanted (0: ``4 * sqrt(num_items)``); lowered to
            ``num_items // 39`` when larger.
        nprobe: lists visited per query (capped at ``nlist``).
        pq_m: PQ sub-quantizers wanted (0: the largest divisor of ``dim`` up to 64); must
            divide ``dim``, otherwise the nearest divisor is taken.
        pq_nbits: bits per PQ code wanted (0: 8); lowered until ``39 * 2**bits`` training
            points are available.
        hnsw_m: neighbours per HNSW node.

    Returns:
        The choice, with a note for every change.

    Raises:
        ValueError: unknown type, negative sizes, or a non-positive dimension.
    """
    if requested not in INDEX_TYPES:
        raise ValueError(f"index type must be one of {', '.join(INDEX_TYPES)}, got {requested!r}")
    if num_items < 0 or dim < 1:
        raise ValueError(f"need num_items >= 0 and dim >= 1, got {num_items} and {dim}")
    if requested == "Flat":
        return IndexChoice(requested, "Flat")
    if requested == "HNSW":
        return IndexChoice(requested, "HNSW", {"hnsw_m": int(hnsw_m)})
    choice = IndexChoice(requested, requested)
    if requested == "IVFPQ" and not _size_pq(choice, num_items, dim, pq_m, pq_nbits):
        choice.index_type = "IVFFlat"
    if not _size_ivf(choice, num_items, nlist, nprobe):
        choice.index_type = "Flat"
        choice.params = {}
    return choice


def _size_ivf(choice: IndexChoice, n: int, nlist: int, nprobe: int) -> bool:
    """Sets ``nlist``/``nprobe``; False when ``n`` cannot train even two lists."""
    most = n // MIN_POINTS_PER_CENTROID
    if most < 2:
        choice.notes.append(
            f"{choice.index_type} needs at least {2 * MIN_POINTS_PER_CENTROID} vectors (2 lists "
            f"x {MIN_POINTS_PER_CENTROID} training points each); the gallery has {n}, so an "
            "exact Flat index is used (at this size it is also the fastest)")
        return False
    wanted = nlist or max(1, round(4 * math.sqrt(n)))
    chosen = min(wanted, most)
    if chosen < wanted:
        choice.notes.append(
            f"nlist lowered from {wanted} to {chosen}: {n} vectors train at most {most} lists "
            f"with {MIN_POINTS_PER_CENTROID} points each")
    choice.params.update(nlist=int(chosen), nprobe=int(max(1, min(nprobe, chosen))))
    return True


def _size_pq(choice: IndexChoice, n: int, dim: int, pq_m: int, pq_nbits: int) -> bool:
    """Sets ``pq_m``/``pq_nbits``; False when ``n`` is too small for useful PQ codes."""
    most_bits = int(math.floor(math.log2(n / MIN_POINTS_PER_CENTROID))) if n > 0 else 0
    if most_bits < _MIN_PQ_BITS:
        need = MIN_POINTS_PER_CENTROID << _MIN_PQ_BITS
        choice.notes.append(
            f"IVFPQ needs at least {need} vectors to train {1 << _MIN_PQ_BITS}-centroid "
            f"codebooks ({MIN_POINTS_PER_CENTROID} points per centroid); the gallery has {n}, "
            "so IVFFlat (no compression) is tried instead")
        return False
    wanted_bits = pq_nbits or _DEFAULT_PQ_BITS
    bits = min(wanted_bits, most_bits)
    if bits < wanted_bits:
        choice.notes.append(
            f"pq_nbits lowered from {wanted_bits} to {bits}: {2 ** wanted_bits} centroids per "
            f"sub-quantizer need {MIN_POINTS_PER_CENTROID << wanted_bits} training vectors, "
            f"the gallery has {n}")
    divisors = [m for m in range(1, dim + 1) if dim % m == 0]
    if pq_m:
        m = min(divisors, key=lambda d: (abs(d - pq_m), d))
        if m != pq_m:
            choice.notes.append(f"pq_m {pq_m} does not divide the dimension {dim}; using {m}")
    else:
        m = max(d for d in divisors if d <= _MAX_PQ_M)
    choice.params.update(pq_m=int(m), pq_nbits=int(bits))
    return True
