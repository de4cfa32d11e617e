"""The one reader of the backbone normalization in a config (modeling's builder)."""

import pytest

from reid_pbn.config import ConfigError, get_cfg
from reid_pbn.layers import PatchBatchNorm2d, get_norm
from reid_pbn.modeling import build_model
from reid_pbn.modeling.backbones import norm_from_cfg, norm_stages_from_cfg


def test_norm_from_cfg():
    cfg = get_cfg()
    assert norm_from_cfg(cfg) == ("BN", {})
    cfg.MODEL.BACKBONE.NORM = "PBN"
    cfg.MODEL.BACKBONE.PBN.MIX = "weighted"
    cfg.MODEL.BACKBONE.PBN.LAM = 0.3
    cfg.MODEL.BACKBONE.PBN.MODES = (1, 2)
    cfg.MODEL.BACKBONE.NORM_KWARGS = ("min_size=3",)
    name, kwargs = norm_from_cfg(cfg)
    assert name == "PBN"
    assert kwargs == {"mix": "weighted", "p": 0.5, "lam": 0.3, "modes": (1, 2), "num_modes": 2,
                      "cut_range": (0.25, 0.75), "min_size": 3}
    m = get_norm(name, 8, **kwargs)
    assert m.lam == 0.3 and m.modes == (1, 2) and m.min_size == 3

    cfg.MODEL.BACKBONE.NORM = "DSBN"
    cfg.MODEL.BACKBONE.DSBN.INNER = "PBN"
    name, kwargs = norm_from_cfg(cfg, num_domains=2)
    assert kwargs["inner"] == "PBN" and kwargs["per_domain_affine"] is False
    assert kwargs["mix"] == "weighted" and kwargs["num_domains"] == 2
    m = get_norm(name, 8, **kwargs)
    assert isinstance(m.bns[1], PatchBatchNorm2d) and m.bns[1].lam == 0.3

    cfg.MODEL.BACKBONE.NORM = "GN"
    cfg.MODEL.BACKBONE.NORM_KWARGS = ("num_groups=4",)
    assert norm_from_cfg(cfg) == ("GN", {"num_groups": 4})


def test_pbn_sync_key_reaches_the_layers():
    cfg = get_cfg()
    assert cfg.MODEL.BACKBONE.PBN.SYNC is False
    cfg.MODEL.BACKBONE.NORM = "PBN"
    assert "sync" not in norm_from_cfg(cfg)[1]
    cfg.MODEL.BACKBONE.PBN.SYNC = True
    name, kwargs = norm_from_cfg(cfg)
    assert kwargs["sync"] is True and get_norm(name, 4, **kwargs).sync
    cfg.MODEL.BACKBONE.NORM = "DSBN"
    cfg.MODEL.BACKBONE.DSBN.INNER = "PBN"
    name, kwargs = norm_from_cfg(cfg, num_domains=2)
    assert all(bn.sync for bn in get_norm(name, 4, **kwargs).bns)


def test_pbn_stages_for_pbn_and_dsbn():
    cfg = get_cfg()
    assert norm_stages_from_cfg(cfg) is None  # BN everywhere
    cfg.MODEL.BACKBONE.NORM = "PBN"
    cfg.MODEL.BACKBONE.PBN.STAGES = ("layer1", "layer2")
    assert norm_stages_from_cfg(cfg) == ("layer1", "layer2")
    cfg.MODEL.BACKBONE.NORM = "DSBN"
    cfg.MODEL.BACKBONE.DSBN.INNER = "BN"  # PBN.STAGES does not concern a BN inside DSBN
    assert norm_stages_from_cfg(cfg) is None
    cfg.MODEL.BACKBONE.DSBN.INNER = "PBN"
    with pytest.raises(ConfigError, match="PBN.STAGES.*DSBN"):
        norm_stages_from_cfg(cfg)
    with pytest.raises(ConfigError, match="PBN.STAGES"):
        build_model(cfg, num_classes=3, num_domains=2)
    cfg.MODEL.BACKBONE.PBN.STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
    assert norm_stages_from_cfg(cfg) is None
