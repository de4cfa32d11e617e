"""Fixtures of the serving tests: a tiny ResNet-18 PBN model saved as config + weights, a tiny
synthetic domain, and a gallery built from it."""

from __future__ import annotations

import pytest
import torch
from serving_helpers import CONFIG_TEXT, SIZE, randomized_model, tiny_cfg

from reid_pbn import FeatureExtractor
from reid_pbn.data import build_dataset
from reid_pbn.serving import Gallery, model_provenance
from reid_pbn.serving.sources import embed_images


@pytest.fixture(scope="session")
def model_files(tmp_path_factory):
    """``(config_file, weights_file, cfg)`` of the tiny model."""
    folder = tmp_path_factory.mktemp("model")
    config_file = folder / "tiny.yml"
    config_file.write_text(CONFIG_TEXT, encoding="utf-8")
    cfg = tiny_cfg()
    weights = folder / "tiny.pth"
    torch.save(randomized_model(cfg).state_dict(), weights)
    return str(config_file), str(weights), cfg


@pytest.fixture(scope="session")
def extractor(model_files):
    """A FeatureExtractor of the tiny model."""
    config_file, weights, _ = model_files
    return FeatureExtractor(config_file, weights=weights, device="cpu")


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """SyntheticA with 8 identities, 2 cameras, 64x32 images (4 queries, 6 gallery images)."""
    root = tmp_path_factory.mktemp("data")
    return build_dataset("SyntheticA", root=str(root), num_ids=8, num_cams=2, imgs_per_cam=1,
                         size=SIZE)


@pytest.fixture(scope="session")
def gallery_images(synthetic, extractor):
    """The synthetic gallery embedded once (features, names, ids, thumbnails)."""
    return embed_images(lambda ims: extractor(ims).numpy(), [p for p, _, _ in synthetic.gallery])


@pytest.fixture
def gallery_dir(tmp_path, gallery_images, model_files):
    """A fresh gallery folder of the synthetic gallery, built with the tiny model."""
    config_file, weights, cfg = model_files
    prov = model_provenance(cfg, config_file=config_file, weights=weights,
                            feature_dim=gallery_images.features.shape[1])
    folder = tmp_path / "gallery"
    g, _ = Gallery.build(folder, gallery_images.features, provenance=prov,
                         names=gallery_images.names, pids=gallery_images.pids,
                         camids=gallery_images.camids, thumbnails=gallery_images.thumbnails)
    g.close()
    return folder
