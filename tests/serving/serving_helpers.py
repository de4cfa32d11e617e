"""Helpers of the serving tests: the tiny model, a server process, random features."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch

from reid_pbn.config import get_cfg
from reid_pbn.modeling import build_model
from reid_pbn.serving.cli import run_tool as run_cli

REPO = Path(__file__).resolve().parents[2]
SIZE = (64, 32)
CONFIG_TEXT = f"""MODEL:
  DEVICE: cpu
  BACKBONE:
    DEPTH: 18
    NORM: PBN
INPUT:
  SIZE_TEST: [{SIZE[0]}, {SIZE[1]}]
"""


def tiny_cfg(**backbone):
    """The config of the tiny model (ResNet-18, PBN, 64x32), with backbone overrides."""
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.DEPTH = 18
    cfg.MODEL.BACKBONE.NORM = "PBN"
    cfg.INPUT.SIZE_TEST = SIZE
    for key, value in backbone.items():
        setattr(cfg.MODEL.BACKBONE, key, value)
    return cfg


def randomized_model(cfg, seed=0, num_domains=1):
    """A model with random weights and random running statistics (so BN is not the identity)."""
    torch.manual_seed(seed)
    model = build_model(cfg, num_classes=0, num_domains=num_domains)
    with torch.no_grad():
        for m in model.modules():
            if getattr(m, "running_var", None) is not None:
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(gallery: Path, model_files, log: Path, *extra: str):
    """Starts tools/serve.py on a free 127.0.0.1 port; returns ``(process, base_url)``."""
    config_file, weights, _ = model_files
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = open(log, "wb")  # noqa: SIM115 - closed by stop_server with the process
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tools" / "serve.py"), "--index", str(gallery),
         "--config-file", config_file, "--weights", weights, "--port", str(port), *extra],
        stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    proc.log_file = out
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out.close()
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if http_json("GET", url + "/health", timeout=1)[0] == 200:
                return proc, url
        except OSError:  # not listening yet
            pass
        time.sleep(0.1)
    stop_server(proc)
    raise RuntimeError(f"server did not start:\n{log.read_text()}")


def http_json(method: str, url: str, body=None, timeout: float = 30) -> tuple[int, dict]:
    """One request with the standard library; returns ``(status, JSON answer)``."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def stop_server(proc) -> None:
    """Stops a server from :func:`start_server` (no-op when it already exited)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.log_file.close()


def random_unit(n: int, dim: int, seed: int) -> np.ndarray:
    """``n`` random unit vectors."""
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def load_tool(name: str):
    """tools/<name>.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(name: str, *argv: str) -> int:
    """Runs a tool in this process (as its ``__main__`` block does) and returns its exit code."""
    module = load_tool(name)
    try:
        return run_cli(name, module.build_parser(), module.main, [str(a) for a in argv])
    except SystemExit as e:  # argparse's own refusals exit from inside parse_args
        return e.code
