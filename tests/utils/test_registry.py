"""The one Registry: its rules, and every family built from every registered name."""

import pytest
import torch
from torch import nn

from reid_pbn.config import get_cfg
from reid_pbn.data import DATASET_REGISTRY
from reid_pbn.data.build import TRAIN_SAMPLERS
from reid_pbn.engine.solver import OPTIMIZERS
from reid_pbn.layers import MIX_LAYERS, NORM_REGISTRY, build_mix_layer
from reid_pbn.modeling import BACKBONE_REGISTRY, HEAD_REGISTRY, LOSS_REGISTRY, META_ARCH_REGISTRY
from reid_pbn.modeling.bne import COMBINES
from reid_pbn.modeling.heads import CLASSIFIERS, NECKS, POOLINGS, build_pooling
from reid_pbn.utils import DuplicateNameError, Registry, UnknownNameError

FAMILIES = {
    "backbone": BACKBONE_REGISTRY,
    "head": HEAD_REGISTRY,
    "loss": LOSS_REGISTRY,
    "meta-architecture": META_ARCH_REGISTRY,
    "norm": NORM_REGISTRY,
    "mixing layer": MIX_LAYERS,
    "data set": DATASET_REGISTRY,
    "train sampler": TRAIN_SAMPLERS,
    "pooling": POOLINGS,
    "classifier": CLASSIFIERS,
    "neck": NECKS,
    "optimizer": OPTIMIZERS,
    "BNE combine": COMBINES,
}


def test_decorator_forms_and_lookup():
    reg = Registry("widget", doc="Widgets: callables.")
    assert reg.__doc__ == "Widgets: callables." and reg.name == "widget"

    @reg.register
    def alpha():
        return 1

    @reg.register()
    def beta():
        return 2

    @reg.register("gamma")
    def _g():
        return 3

    reg.register(len, name="length")
    assert reg.get("alpha") is alpha and reg["beta"] is beta and reg.get("gamma") is _g
    assert "length" in reg and "delta" not in reg and len(reg) == 4
    assert list(reg) == list(reg.keys()) == ["alpha", "beta", "gamma", "length"]
    assert reg.names() == sorted(reg) and dict(reg.items())["length"] is len
    reg.register(alpha)  # the same object again: harmless (a re-import)
    assert reg.unregister("length") is len and "length" not in reg


def test_duplicate_name_names_both_objects():
    reg = Registry("widget", items={"a": min})
    with pytest.raises(DuplicateNameError, match=r"widget name 'a' .*function min.*function max"):
        reg.register(max, name="a")
    assert isinstance(DuplicateNameError("x"), ValueError)


def test_unknown_name_says_did_you_mean_and_lists_names():
    reg = Registry("widget", items={"resnet": 1, "gem": 2})
    with pytest.raises(UnknownNameError) as info:
        reg.get("resnet50")
    msg = str(info.value)
    assert msg == "Unknown widget 'resnet50'. Did you mean: resnet? Registered: gem, resnet"
    # Both a KeyError (a lookup) and a ValueError (a bad config value).
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    with pytest.raises(UnknownNameError, match="Registered: gem, resnet$"):
        reg.get("zzz")  # nothing close: no suggestion


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_is_a_registry_with_the_same_rules(family):
    reg = FAMILIES[family]
    assert isinstance(reg, Registry) and reg.name == family and len(reg) > 0
    first = next(iter(reg))
    with pytest.raises(UnknownNameError, match=f"Did you mean: {first}"):
        reg.get(first + "x")
    with pytest.raises(DuplicateNameError, match="already registered"):
        reg.register(object(), name=first)


# Backbones, heads, losses and meta-architectures are built from every registered name in
# tests/modeling (test_meta_arch.py, test_heads.py, test_losses.py), norms in
# tests/layers/test_norm.py, data sets in tests/data/test_datasets.py; the other families here.


@pytest.mark.parametrize("name", MIX_LAYERS.names())
def test_every_mixing_layer_builds(name):
    x = torch.randn(4, 8, 4, 4)
    assert build_mix_layer(name).eval()(x).equal(x)


@pytest.mark.parametrize("name", POOLINGS.names())
def test_every_pooling_builds(name):
    assert build_pooling(name)(torch.randn(2, 8, 4, 4)).shape == (2, 8)


@pytest.mark.parametrize("name", CLASSIFIERS.names())
def test_every_classifier_builds(name):
    clf = CLASSIFIERS.get(name)(8, 3, scale=16.0, margin=0.1)
    assert clf(torch.randn(2, 8), torch.tensor([0, 1])).shape == (2, 3)


@pytest.mark.parametrize("name", NECKS.names())
def test_every_neck_builds(name):
    assert NECKS.get(name)(8).train()(torch.randn(4, 8)).shape == (4, 8)


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_builds(name):
    assert isinstance(OPTIMIZERS.get(name)(nn.Linear(2, 2).parameters(), lr=0.1),
                      torch.optim.Optimizer)


@pytest.mark.parametrize("name", COMBINES.names())
def test_every_combiner_builds(name):
    feats, w = torch.randn(2, 3, 4), torch.softmax(torch.randn(3, 2), 1)
    assert COMBINES.get(name)(feats, w).shape[0] == 3


@pytest.mark.parametrize("name", TRAIN_SAMPLERS.names())
def test_every_train_sampler_builds(name):
    class _Items:
        pids = [i // 4 for i in range(32)]
        domains = [0] * 32

        def __len__(self):
            return 32

    cfg = get_cfg()
    cfg.DATALOADER.NUM_INSTANCE = 4
    sampler = TRAIN_SAMPLERS.get(name)(_Items(), 8, cfg, 0, None)
    batch = next(iter(sampler))
    assert len(batch) == 8
