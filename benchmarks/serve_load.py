"""Load test of tools/serve.py on 127.0.0.1: /search throughput and latency on a 10,000-item
gallery, with additions running alongside, and a check that no addition is lost.

It builds a gallery of N random unit features (the service does not care where features come
from; provenance is that of the model below), starts tools/serve.py on a free 127.0.0.1 port,
and runs three phases, each with C concurrent clients (keep-alive HTTP/1.1 connections, one
thread each) sending a fixed number of requests:

1. /search with a feature vector (k=10): the service's HTTP, JSON and FAISS path;
2. /search with an image upload (k=10): decoding and the model, batched across clients;
3. /search with feature vectors again while one more client adds items (POST /gallery, one
   vector each, each on disk before it is answered).

Then every acknowledged addition is looked up (GET /gallery/{id}) and the gallery size
checked: "lost" counts acknowledged additions the service no longer has. Only 127.0.0.1 is
contacted. The model is a randomly initialized ResNet (weights do not change the cost).

Examples:
    python benchmarks/serve_load.py                        # 10,000 items, 8 clients
    python benchmarks/serve_load.py --clients 16 --requests 4000 --depth 50 --size 256 128
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from reid_pbn.config import get_cfg
from reid_pbn.modeling import build_model
from reid_pbn.serving import Gallery, model_provenance

REPO = Path(__file__).resolve().parents[1]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gallery-size", type=int, default=10_000, help="Items in the gallery.")
    p.add_argument("--clients", type=int, default=8, help="Concurrent clients.")
    p.add_argument("--requests", type=int, default=2000,
                   help="Feature-vector searches per phase (image searches: a quarter).")
    p.add_argument("--additions", type=int, default=100,
                   help="Additions sent during phase 3.")
    p.add_argument("--depth", type=int, default=18, help="ResNet depth of the model.")
    p.add_argument("--size", type=int, nargs=2, default=(128, 64), metavar=("H", "W"),
                   help="Model input size.")
    p.add_argument("--index-type", default="Flat", help="Gallery index type.")
    p.add_argument("--server-threads", type=int, default=0,
                   help="Torch threads of the server (0: PyTorch's default).")
    p.add_argument("--json", default=None, help="Also write the figures to this JSON file.")
    return p.parse_args()


class Client:
    """A keep-alive HTTP/1.1 connection to the service."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str = "application/json") -> tuple[int, dict]:
        headers = {"Content-Type": content_type} if body is not None else {}
        self.conn.request(method, path, body=body, headers=headers)
        r = self.conn.getresponse()
        return r.status, json.loads(r.read())


def multipart(fields: dict[str, str], filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
             .encode() for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                 f'filename="{filename}"\r\nContent-Type: image/jpeg\r\n\r\n'.encode() + data
                 + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), \
        f"multipart/form-data; boundary={boundary}"


def run_phase(port: int, clients: int, requests: int, make_request) -> dict:
    """``requests`` calls of ``make_request(client, i)`` spread over ``clients`` threads."""
    latencies, errors, lock = [], [], threading.Lock()
    counter = iter(range(requests))

    def worker():
        client = Client(port)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            start = time.perf_counter()
            try:
                status, body = make_request(client, i)
                ok = status == 200
            except (OSError, http.client.HTTPException, ValueError) as e:
                ok, body = False, {"error": repr(e)}
                client = Client(port)
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                if not ok:
                    errors.append(body)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = np.array(latencies) * 1000
    return {"requests": requests, "clients": clients, "seconds": round(wall, 2),
            "throughput": round(requests / wall, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "mean_ms": round(statistics.fmean(lat), 2), "errors": len(errors),
            "first_error": errors[0] if errors else None}


def start_server(gallery: Path, config_file: str, weights: str, threads: int) -> tuple:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, str(REPO / "tools" / "serve.py"), "--index", str(gallery),
           "--config-file", config_file, "--weights", weights, "--port", str(port),
           "--threads", str(threads)]
    log = open(gallery.parent / "server.log", "wb")  # noqa: SIM115 - lives with the server
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if Client(port).request("GET", "/health")[0] == 200:
                return proc, port, log
        except OSError:
            time.sleep(0.2)
        if proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"server did not start; see {gallery.parent / 'server.log'}")


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="serve_load_"))
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.DEPTH = args.depth
    cfg.INPUT.SIZE_TEST = tuple(args.size)
    config_file = work / "model.yml"
    config_file.write_text(f"MODEL:\n  DEVICE: cpu\n  BACKBONE:\n    DEPTH: {args.depth}\n"
                           f"INPUT:\n  SIZE_TEST: [{args.size[0]}, {args.size[1]}]\n")
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=0).eval()
    weights = work / "model.pth"
    torch.save(model.state_dict(), weights)
    with torch.no_grad():
        dim = int(model(torch.zeros(1, 3, *args.size)).shape[1])
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((args.gallery_size, dim)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    prov = model_provenance(cfg, config_file=str(config_file), weights=str(weights),
                            feature_dim=dim)
    t0 = time.perf_counter()
    gallery, choice = Gallery.build(work / "gallery", feats, provenance=prov,
                                    index_type=args.index_type,
                                    pids=list(range(args.gallery_size)))
    gallery.close()
    print(f"gallery: {args.gallery_size} x {dim} ({choice.index_type}) built in "
          f"{time.perf_counter() - t0:.1f} s in {work}")
    proc, port, log = start_server(work / "gallery", str(config_file), str(weights),
                                   args.server_threads)
    h, w = args.size
    jpegs = []
    for i in range(16):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG")
        jpegs.append((f"{i:04d}_c1s1_000000_00.jpg", buf.getvalue()))
    queries = rng.standard_normal((256, dim)).astype(np.float32)

    def feature_search(client, i):
        body = json.dumps({"feature": queries[i % len(queries)].tolist(), "k": 10}).encode()
        return client.request("POST", "/search", body)

    def image_search(client, i):
        name, data = jpegs[i % len(jpegs)]
        body, ctype = multipart({"k": "10"}, name, data)
        return client.request("POST", "/search", body, ctype)

    try:
        results = {"feature search": run_phase(port, args.clients, args.requests,
                                               feature_search),
                   "image search": run_phase(port, args.clients, max(1, args.requests // 4),
                                             image_search)}
        acked, add_errors = [], []

        def adder():
            client = Client(port)
            for i in range(args.additions):
                vec = rng.standard_normal(dim).astype(np.float32)
                status, body = client.request("POST", "/gallery", json.dumps(
                    {"features": [vec.tolist()], "pids": [10**6 + i]}).encode())
                (acked.extend(it["id"] for it in body["added"]) if status == 201
                 else add_errors.append(body))

        add_thread = threading.Thread(target=adder)
        add_start = time.perf_counter()
        add_thread.start()
        results["feature search + additions"] = run_phase(port, args.clients, args.requests,
                                                          feature_search)
        add_thread.join()
        add_seconds = time.perf_counter() - add_start
        client = Client(port)
        lost = sum(client.request("GET", f"/gallery/{i}")[0] != 200 for i in acked)
        size = client.request("GET", "/stats")[1]["gallery_size"]
        stats = client.request("GET", "/stats")[1]
    finally:
        proc.terminate()
        proc.wait()
        log.close()
    additions = {"sent": args.additions, "acknowledged": len(acked), "errors": len(add_errors),
                 "lost": lost, "gallery_size_after": size,
                 "expected_size": args.gallery_size + len(acked),
                 "per_second": round(len(acked) / add_seconds, 1)}
    print(f"\nmachine: {platform.platform()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}; model ResNet-{args.depth} at {h}x{w}, {dim}-d; gallery "
          f"{args.gallery_size} ({choice.index_type}); {args.clients} clients\n")
    print("| phase | requests | throughput (req/s) | p50 (ms) | p99 (ms) | errors |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['requests']} | {r['throughput']} | {r['p50_ms']} | "
              f"{r['p99_ms']} | {r['errors']} |")
    print(f"\nadditions: {additions}")
    print(f"batching: {stats['batching']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "additions": additions,
                                               "batching": stats["batching"]}, indent=1))
    if lost or additions["errors"] or size != additions["expected_size"] or any(
            r["errors"] for r in results.values()):
        raise SystemExit("FAILED: errors or lost additions (see above)")


if __name__ == "__main__":
    main()
