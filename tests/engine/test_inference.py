"""inference_on_datasets (with a fake test loader) and the DDP feature gather."""

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from reid_pbn.config import get_cfg
from reid_pbn.engine import inference
from reid_pbn.engine.inference import inference_on_datasets
from reid_pbn.evaluation import evaluate, extract_features


class _Images(Dataset):
    """Query (first 6) then gallery (18) items; images encode the identity."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.pids = [i % 3 for i in range(6)] + [i % 4 for i in range(18)]
        self.camids = [0] * 6 + [1 + i % 2 for i in range(18)]
        self.images = [torch.full((3, 8, 4), float(p)) + 0.3 * torch.randn(3, 8, 4, generator=g)
                       for p in self.pids]

    def __len__(self):
        return len(self.pids)

    def __getitem__(self, i):
        return {"images": self.images[i], "pids": self.pids[i], "camids": self.camids[i],
                "domains": -1, "img_paths": f"/data/{i}.jpg"}


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(96, 16)
        self.bn = nn.BatchNorm1d(16)

    def forward(self, x):
        return self.bn(self.fc(x.flatten(1)))


def test_inference_on_datasets_writes_results(tmp_path, monkeypatch):
    calls = []

    def fake_build_test_loader(cfg, name):
        calls.append(name)
        return DataLoader(_Images(), batch_size=4), 6

    monkeypatch.setattr(inference, "build_test_loader", fake_build_test_loader)
    cfg = get_cfg()
    cfg.TEST.MAX_RANK = 5
    cfg.TEST.ROC.ENABLED = True
    model = _Model()
    results = inference_on_datasets(cfg, model, ["A", "B"], output_dir=tmp_path)
    assert calls == ["A", "B"] and list(results) == ["A", "B"]
    r = results["A"]
    assert r["num_queries"] == 6 and len(r["cmc"]) == 5 and "TPR@FPR=1e-02" in r
    feats = extract_features(model, DataLoader(_Images(), batch_size=4), "cpu")["feats"]
    ds = _Images()
    direct = evaluate(feats[:6], feats[6:], ds.pids[:6], ds.pids[6:], ds.camids[:6],
                      ds.camids[6:], max_rank=5)
    assert r["mAP"] == pytest.approx(direct["mAP"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved) == {"A", "B"} and len(saved["A"]["cmc"]) == 5
    csv_lines = (tmp_path / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("dataset,mAP") and len(csv_lines) == 3
    for name in ("cmc_A.png", "cmc_B.png", "roc_A.png"):
        assert (tmp_path / name).stat().st_size > 0


class _BNEModel(_Model):
    """Sets per-image domain weights like a BNE model: softmax of the first two features."""

    def forward(self, x):
        f = super().forward(x)
        self.last_domain_weights = torch.softmax(f[:, :2], dim=1)
        return f


def test_inference_reports_average_bne_domain_weights(monkeypatch):
    monkeypatch.setattr(inference, "build_test_loader",
                        lambda cfg, name: (DataLoader(_Images(), batch_size=5), 6))
    cfg = get_cfg()
    cfg.DATASETS.NAMES = ("SrcA", "SrcB")
    cfg.TEST.FLIP = True  # the weights of the unflipped images are the ones averaged
    model = _BNEModel().eval()
    r = inference_on_datasets(cfg, model, ["T"])["T"]
    with torch.no_grad():
        expected = torch.softmax(model(torch.stack(_Images().images))[:, :2], 1).mean(0)
    assert r["domain_weight:SrcA"] == pytest.approx(expected[0].item(), abs=1e-6)
    assert r["domain_weight:SrcB"] == pytest.approx(expected[1].item(), abs=1e-6)
    assert r["domain_weight:SrcA"] + r["domain_weight:SrcB"] == pytest.approx(1.0)


def _gather_worker(rank: int, init: str, out_dir: str) -> None:
    import torch.distributed as dist

    from reid_pbn.data.samplers import InferenceSampler
    from reid_pbn.engine.inference import gather_features

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        ds = _Images()
        loader = DataLoader(ds, batch_size=5, sampler=InferenceSampler(len(ds)))
        data = gather_features(extract_features(_Model(), loader, "cpu"))
        torch.save({"feats": data["feats"], "pids": torch.from_numpy(data["pids"]),
                    "paths": data["paths"]}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_gather_features_restores_dataset_order_across_ranks(tmp_path):
    # Two gloo processes each extract their contiguous shard; both end with the whole set.
    import torch.multiprocessing as mp

    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_gather_worker, args=(init, str(tmp_path)), nprocs=2, join=True)
    expected = extract_features(_Model(), DataLoader(_Images(), batch_size=24), "cpu")
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(got["feats"], expected["feats"], atol=1e-6, rtol=0)
        assert got["pids"].tolist() == expected["pids"].tolist()
        assert got["paths"] == expected["paths"]
