"""extract_features and result tables/files."""


import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from reid_pbn.evaluation import (
    extract_features,
    format_results_table,
)


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


def test_extract_features_order_flip_and_mode():
    model = _Model().train()
    loader = DataLoader(_Images(), batch_size=5)
    out = extract_features(model, loader, "cpu")
    assert model.training  # mode restored
    assert out["feats"].shape == (24, 16) and out["feats"].dtype == torch.float32
    np.testing.assert_allclose(out["feats"].norm(dim=1).numpy(), 1.0, atol=1e-5)
    assert out["pids"].tolist() == _Images().pids and out["paths"][7] == "/data/7.jpg"
    assert (out["domains"] == -1).all() and out["camids"].dtype == np.int64
    flipped = extract_features(model, loader, "cpu", flip=True, normalize=False)
    model.eval()
    with torch.no_grad():
        x = torch.stack(_Images().images)
        expected = (model(x) + model(x.flip(3))) / 2
    np.testing.assert_allclose(flipped["feats"].numpy(), expected.numpy(), atol=1e-5)


def test_format_results_table():
    table = format_results_table({
        "DukeMTMC": {"mAP": 0.5, "mINP": 0.1, "Rank-1": 0.7, "Rank-5": 0.8, "Rank-10": 0.9},
        "Market1501": {"mAP": 0.25, "Rank-1": 0.5, "TPR@FPR=1e-04": 0.3},
    })
    lines = table.splitlines()
    assert "mAP" in lines[0] and "TPR@FPR=1e-04" in lines[0]
    assert "50.00" in lines[2] and "70.00" in lines[2]
    assert lines[3].split("|")[2].strip() == "25.00" and "-" in lines[3]
