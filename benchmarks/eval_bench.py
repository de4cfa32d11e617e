"""Retrieval-engine benchmark: exact metrics at Market-1501 and MSMT17 size, and ANN at 1M.

1. Exact metrics from features, in one process: reid_pbn's ``evaluate`` (query blocks, match
   ranks counted, no sort of the distance matrix) against the algorithm peer toolkits use
   (fast-reid's ``eval_market1501``: the full Q x G distance matrix, ``np.argsort(axis=1)``,
   the ``matches`` matrix, then a loop over queries; its per-query AP list comprehension is
   vectorized, which is closer to fast-reid's Cython path). Both start from the same features
   and compute distances with the same BLAS call, so the difference is the ranking algorithm.
   Printed: wall time, peak resident memory above the features (sampled from /proc every
   2 ms), their ratios, and the metrics of both (they must agree).
   Sizes: Market-1501 (3,368 x 15,913) and MSMT17 (11,659 x 82,161), 2,048-d. The reference
   is skipped where its estimated peak (about 21 bytes per query-gallery pair) does not fit in
   the available memory.
2. Approximate search on a 1,000,000-item gallery: ``ReIDIndex("IVFPQ")`` against the exact
   ``ReIDIndex("Flat")``: recall@10 (overlap of the top-10 sets) and query throughput.

Features are random but clustered like re-ID embeddings: identities are drawn around
"appearance group" centres, images around their identity with camera-specific shifts, and the
Market/MSMT galleries contain distractors of no query identity.

Examples:
    python benchmarks/eval_bench.py                 # full sizes (several minutes on 2 cores)
    python benchmarks/eval_bench.py --quick         # sizes divided by 8, 200k ANN gallery
    python benchmarks/eval_bench.py --only market
"""

from __future__ import annotations

import argparse
import gc as garbage
import os
import threading
import time

import numpy as np
import torch

from reid_pbn.evaluation import ReIDIndex, compute_distance, evaluate

SIZES = {
    # name: (num_query, num_gallery, num_ids, num_cams, distractors)
    "market": (3368, 15913, 750, 6, 2798),
    "msmt": (11659, 82161, 3060, 15, 0),
}


class PeakRSS:
    """Peak resident memory of this process during a ``with`` block, above its start."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        garbage.collect()
        self.start = self._rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def above(self) -> int:
        """Bytes of the peak above the resident size at the start."""
        return self.peak - self.start


def available_memory() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def clustered_reid_features(num_query, num_gallery, num_ids, num_cams, distractors, dim, seed,
                            id_scale=0.25):
    """Query/gallery features, pids and camids shaped like a re-ID test split.

    Per dimension: image noise 1, identity offset ``id_scale`` around one of ``num_ids / 10``
    appearance groups (offset 0.25), camera shift 0.1; ``id_scale`` sets the difficulty
    (0.25 gives mAP around 70% and mINP around 30%, like a fair cross-domain model).
    """
    rng = np.random.default_rng(seed)
    num_groups = max(1, num_ids // 10)
    groups = 0.25 * rng.standard_normal((num_groups, dim), dtype=np.float32)
    centres = groups[rng.integers(0, num_groups, num_ids)]
    centres += id_scale * rng.standard_normal((num_ids, dim), dtype=np.float32)
    cam_shift = 0.1 * rng.standard_normal((num_cams, dim), dtype=np.float32)

    def draw(pids, cams, out_pids):
        feats = np.empty((len(pids), dim), dtype=np.float32)
        for s in range(0, len(pids), 4096):
            p, c = pids[s:s + 4096], cams[s:s + 4096]
            x = rng.standard_normal((len(p), dim), dtype=np.float32)
            real = p >= 0
            x[real] += centres[p[real]] + cam_shift[c[real]]
            x[~real] += groups[rng.integers(0, num_groups, int((~real).sum()))]
            feats[s:s + 4096] = x
        out_pids[:] = np.where(pids >= 0, pids + 1, 0)  # distractors get pid 0
        return feats

    g_pids = np.concatenate([rng.integers(0, num_ids, num_gallery - distractors),
                             np.full(distractors, -1)])
    q_pids = rng.integers(0, num_ids, num_query)
    g_cams = rng.integers(0, num_cams, num_gallery)
    q_cams = rng.integers(0, num_cams, num_query)
    gp, qp = np.empty_like(g_pids), np.empty_like(q_pids)
    gf = draw(g_pids, g_cams, gp)
    qf = draw(q_pids, q_cams, qp)
    return qf, gf, qp, gp, q_cams, g_cams


def argsort_reference(qf, gf, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """fast-reid's algorithm: full distance matrix, argsort, matches matrix, per-query loop."""
    distmat = compute_distance(qf, gf, "cosine").numpy()
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    indices = np.argsort(distmat, axis=1)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_ap, all_inp = [], [], []
    for q_idx in range(num_q):
        order = indices[q_idx]
        remove = (g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])
        raw_cmc = matches[q_idx][~remove]
        if not np.any(raw_cmc):
            continue
        cmc = raw_cmc.cumsum()
        max_pos_idx = np.max(np.where(raw_cmc == 1))
        all_inp.append(cmc[max_pos_idx] / (max_pos_idx + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        tmp_cmc = raw_cmc.cumsum() / (np.arange(len(raw_cmc)) + 1.0) * raw_cmc
        all_ap.append(tmp_cmc.sum() / raw_cmc.sum())
    cmc = np.asarray(all_cmc).astype(np.float32).sum(0) / len(all_cmc)
    return {"mAP": float(np.mean(all_ap)), "mINP": float(np.mean(all_inp)), "Rank-1": cmc[0]}


def bench_exact(name, args) -> dict:
    nq, ng, ids, cams, distr = SIZES[name]
    if args.quick:
        nq, ng, ids, distr = nq // 8, ng // 8, max(10, ids // 8), distr // 8
    print(f"\n== {name}: {nq:,} queries x {ng:,} gallery, {args.dim}-d ==")
    t = time.perf_counter()
    qf, gf, qp, gp, qc, gc = clustered_reid_features(nq, ng, ids, cams, distr, args.dim, 0)
    qf, gf = torch.from_numpy(qf), torch.from_numpy(gf)
    feat_bytes = qf.numel() * 4 + gf.numel() * 4
    print(f"features: {gib(feat_bytes)} (generated in {time.perf_counter() - t:.1f} s)")
    out = {"size": (nq, ng)}

    need = int(21 * nq * ng + feat_bytes * 0.2)
    avail = available_memory()
    fits = need <= 0.85 * avail
    # Runs alternate between the two so that both see the same machine load; the best time of
    # each is reported (the machine may be shared).
    repeats = args.repeats if name == "market" or args.quick else 1
    t_engine = t_ref = float("inf")
    mem_engine = mem_ref = 0
    for _ in range(repeats):
        with PeakRSS() as mem:
            t = time.perf_counter()
            res = evaluate(qf, gf, qp, gp, qc, gc, metric="cosine", max_rank=50)
            t_engine = min(t_engine, time.perf_counter() - t)
        mem_engine = max(mem_engine, mem.above)
        if fits:
            with PeakRSS() as mem:
                t = time.perf_counter()
                ref = argsort_reference(qf, gf, qp, gp, qc, gc)
                t_ref = min(t_ref, time.perf_counter() - t)
            mem_ref = max(mem_ref, mem.above)
    out["engine"] = (t_engine, mem_engine)
    print(f"reid_pbn evaluate : {t_engine:8.2f} s   peak {gib(mem_engine)} above the features   "
          f"mAP {100 * res['mAP']:.2f}  mINP {100 * res['mINP']:.2f}  "
          f"R1 {100 * res['Rank-1']:.2f}")
    if fits:
        out["reference"] = (t_ref, mem_ref)
        print(f"argsort reference : {t_ref:8.2f} s   peak {gib(mem_ref)} above the features   "
              f"mAP {100 * ref['mAP']:.2f}  mINP {100 * ref['mINP']:.2f}  "
              f"R1 {100 * ref['Rank-1']:.2f}")
        print(f"speed-up {t_ref / t_engine:.1f}x, memory {mem_ref / max(1, mem_engine):.1f}x "
              f"less;  |mAP diff| {abs(ref['mAP'] - res['mAP']):.1e}  (best of {repeats})")
    else:
        print(f"argsort reference : skipped (needs about {gib(need)}, {gib(avail)} available)")
        out["reference"] = None
        # Time it on the largest query subset that fits in 40% of the memory, and extrapolate.
        part = min(nq, int(0.4 * avail / (21 * ng)))
        if part >= 100:
            with PeakRSS() as mem:
                t = time.perf_counter()
                argsort_reference(qf[:part], gf, qp[:part], gp, qc[:part], gc)
                t_part = time.perf_counter() - t
            scale = nq / part
            print(f"argsort reference on {part:,} of the queries: {t_part:.2f} s, peak "
                  f"{gib(mem.above)}; all queries extrapolated: about {t_part * scale:.0f} s and "
                  f"{gib(mem.above * scale)} (speed-up about {t_part * scale / t_engine:.1f}x)")
    if args.worst_case:
        # Features with no identity signal: every gallery item precedes the last match, so the
        # engine gathers whole blocks (its worst case).
        rng = np.random.default_rng(1)
        noise = torch.from_numpy(rng.standard_normal(qf.shape, dtype=np.float32))
        with PeakRSS() as mem:
            t = time.perf_counter()
            r = evaluate(noise, gf, qp, gp, qc, gc)
            t_w = time.perf_counter() - t
        print(f"worst case (random queries): {t_w:.2f} s, peak {gib(mem.above)}, "
              f"mAP {100 * r['mAP']:.2f}")
    del qf, gf
    garbage.collect()
    return out


def ann_data(num, num_query, dim, seed):
    """Unit-norm embeddings: appearance groups > identities (about 10 images each) > images."""
    rng = np.random.default_rng(seed)
    num_ids = num // 10
    groups = rng.standard_normal((num_ids // 20, dim), dtype=np.float32)
    ids = groups[rng.integers(0, len(groups), num_ids)]
    ids += 0.8 * rng.standard_normal(ids.shape, dtype=np.float32)

    def draw(n):
        x = np.empty((n, dim), dtype=np.float32)
        for s in range(0, n, 65536):
            m = min(65536, n - s)
            x[s:s + m] = ids[rng.integers(0, num_ids, m)]
            x[s:s + m] += 0.6 * rng.standard_normal((m, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    return draw(num), draw(num_query)


def bench_ann(args) -> dict:
    n = 200_000 if args.quick else args.ann_size
    print(f"\n== ANN: {n:,}-item gallery, {args.ann_dim}-d, {args.ann_queries} queries ==")
    gallery, queries = ann_data(n, args.ann_queries, args.ann_dim, 0)
    flat = ReIDIndex(args.ann_dim, "Flat", "cosine", use_gpu=False)
    flat.add(gallery)
    nlist = args.nlist or int(2 * np.sqrt(n))
    ivfpq = ReIDIndex(args.ann_dim, "IVFPQ", "cosine", nlist=nlist, nprobe=args.nprobe,
                      pq_m=args.pq_m, pq_nbits=8, use_gpu=False)
    t = time.perf_counter()
    ivfpq.add(gallery)
    t_build = time.perf_counter() - t
    t_flat = t_ivf = float("inf")
    for _ in range(args.repeats):  # alternating, best of each (the machine may be shared)
        t = time.perf_counter()
        _, truth = flat.search(queries, 10)
        t_flat = min(t_flat, time.perf_counter() - t)
        t = time.perf_counter()
        _, found = ivfpq.search(queries, 10)
        t_ivf = min(t_ivf, time.perf_counter() - t)
    recall = float(np.mean([len(set(a) & set(b)) / 10.0 for a, b in zip(found, truth)]))
    nq = len(queries)
    print(f"Flat (exact)      : {nq / t_flat:9.0f} queries/s  ({gallery.nbytes / 2**20:.0f} MiB)")
    print(f"IVFPQ nlist={nlist} nprobe={args.nprobe} m={args.pq_m}x8bit: "
          f"{nq / t_ivf:9.0f} queries/s  ({n * args.pq_m / 2**20:.0f} MiB of codes), "
          f"built in {t_build:.1f} s")
    print(f"IVFPQ recall@10 vs exact: {recall:.3f}   speed-up {t_flat / t_ivf:.1f}x")
    return {"recall": recall, "flat_qps": nq / t_flat, "ivfpq_qps": nq / t_ivf}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="Divide the exact-metric sizes by 8 and use a 200k ANN gallery.")
    parser.add_argument("--only", choices=("market", "msmt", "ann"), action="append",
                        help="Run only these parts (repeatable); default all.")
    parser.add_argument("--dim", type=int, default=2048, help="Feature dimension (exact part).")
    parser.add_argument("--repeats", type=int, default=3,
                        help="Alternating timed runs at Market size and for ANN search (best "
                        "of each is reported; MSMT size runs once).")
    parser.add_argument("--worst-case", action="store_true",
                        help="Also time the engine on queries without identity signal.")
    parser.add_argument("--ann-size", type=int, default=1_000_000, help="ANN gallery size.")
    parser.add_argument("--ann-dim", type=int, default=128, help="ANN feature dimension.")
    parser.add_argument("--ann-queries", type=int, default=2000, help="ANN queries.")
    parser.add_argument("--nlist", type=int, default=0, help="IVF lists (0: 2 * sqrt(N)).")
    parser.add_argument("--nprobe", type=int, default=16, help="IVF lists probed per query.")
    parser.add_argument("--pq-m", type=int, default=64, help="PQ sub-quantizers.")
    args = parser.parse_args(argv)
    parts = args.only or ["market", "msmt", "ann"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, {gib(available_memory())} available, "
          f"load average {os.getloadavg()[0]:.1f}")
    for name in ("market", "msmt"):
        if name in parts:
            bench_exact(name, args)
    if "ann" in parts:
        bench_ann(args)


if __name__ == "__main__":
    main()
