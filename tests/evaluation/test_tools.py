"""The evaluation commands: --help, and an end-to-end run on tiny synthetic domains (result
provenance, the OUTPUT_DIR/eval layout)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reid_pbn import FeatureExtractor
from reid_pbn.engine import file_sha256

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("cross_eval.py", "extract_features.py", "visualize_results.py")
TINY = [
    "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0",
    "DATASETS.SYNTHETIC.NUM_IDS", "12", "DATASETS.SYNTHETIC.NUM_CAMS", "2",
    "DATASETS.SYNTHETIC.IMGS_PER_CAM", "2", "DATASETS.SYNTHETIC.SIZE", "(64, 32)",
    "INPUT.SIZE_TEST", "(64, 32)",
]
CONFIG = str(ROOT / "configs" / "Demo" / "synthetic_cross_domain.yml")


def _run(*args):
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.parametrize("tool", TOOLS)
def test_help(tool):
    out = _run(str(ROOT / "tools" / tool), "--help")
    assert "Examples" in out  # the shared parser's part is checked in tests/test_tools_cli.py


@pytest.mark.slow
def test_cross_eval_and_extract_features_end_to_end(tmp_path):
    from reid_pbn.engine.defaults import setup_cfg
    from reid_pbn.modeling import build_model

    opts = TINY + ["DATASETS.ROOT", str(tmp_path / "data")]
    cfg = setup_cfg(CONFIG, opts)
    torch.manual_seed(0)
    weights = tmp_path / "model.pth"
    torch.save(build_model(cfg, num_classes=6, num_domains=1).state_dict(), weights)

    # Without --output: OUTPUT_DIR/eval/, the folder training evaluations use.
    _run(str(ROOT / "tools" / "cross_eval.py"), "--config-file", CONFIG, "--weights",
         str(weights), "--targets", "SyntheticB", "--roc", "--rerank", *opts,
         "OUTPUT_DIR", str(tmp_path / "run"))
    out = tmp_path / "run" / "eval"
    results = json.loads((out / "results.json").read_text())
    assert 0.0 <= results["SyntheticB"]["mAP"] <= 1.0 and "TPR@FPR=1e-02" in results["SyntheticB"]
    assert (out / "results.csv").exists() and (out / "cmc_SyntheticB.png").stat().st_size > 0
    prov = results["provenance"]
    assert prov["checkpoint"] == str(weights) and prov["checkpoint_sha256"] == file_sha256(weights)
    assert prov["rerank"]["k1"] == cfg.TEST.RERANK.K1 and prov["aqe"] is None
    assert prov["checkpoint_sha256"] in (out / "log.txt").read_text()

    feats_dir = tmp_path / "feats"
    _run(str(ROOT / "tools" / "extract_features.py"), "--config-file", CONFIG, "--weights",
         str(weights), "--dataset", "SyntheticB", "--split", "query", "--output",
         str(feats_dir), "--device", "cpu", *opts)
    feats = np.load(feats_dir / "features.npy")
    meta = json.loads((feats_dir / "metadata.json").read_text())
    assert feats.dtype == np.float32 and feats.shape[0] == meta["count"] == len(meta["pids"])
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    # Decoded in DataLoader workers: the same features as the Python API on the same paths.
    api = FeatureExtractor(cfg=cfg, weights=str(weights), device="cpu")
    np.testing.assert_allclose(api(meta["paths"]).numpy(), feats, atol=1e-5)

    vis = tmp_path / "vis"
    _run(str(ROOT / "tools" / "visualize_results.py"), "--config-file", CONFIG, "--weights",
         str(weights), "--target", "SyntheticB", "--num-queries", "2", "--tsne-points", "60",
         "--output", str(vis), *opts)
    for name in ("distance_hist.png", "roc.png", "tsne.png", "results.json"):
        assert (vis / name).stat().st_size > 0
    assert len(list((vis / "ranked").glob("ranked_*.png"))) == 2


def test_extract_features_skips_and_names_unreadable_images(tmp_path):
    from PIL import Image

    images = tmp_path / "imgs"
    images.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 20, 3), dtype=np.uint8)).save(
            images / f"ok{k}.jpg")
    (images / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "feats"
    args = [sys.executable, str(ROOT / "tools" / "extract_features.py"), "--config-file", CONFIG,
            "--images", str(images), "--output", str(out), "--device", "cpu",
            "--num-workers", "2"]
    stdout = _run(*args[1:], *TINY)
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["count"] == 3 and len(meta["paths"]) == 3
    assert np.load(out / "features.npy").shape[0] == 3
    assert [s["path"] for s in meta["skipped"]] == [str(images / "broken.jpg")]
    assert "1 unreadable image(s) skipped" in stdout
    strict = subprocess.run([*args, "--strict", *TINY], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert strict.returncode == 1 and "broken.jpg" in strict.stderr
    assert "Traceback" not in strict.stderr
