"""reid_pbn.FeatureExtractor: every input kind gives the same features, batching and flip
averaging are exact, bad inputs are refused with a message."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from reid_pbn import FeatureExtractor
from reid_pbn.config import get_cfg
from reid_pbn.modeling import build_model

SIZE = (32, 16)


@pytest.fixture(scope="module")
def extractor():
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.DEPTH = 18
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.INPUT.SIZE_TEST = SIZE
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=3).eval()
    return FeatureExtractor(cfg=cfg, model=model, device="cpu", batch_size=2)


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (SIZE[0], SIZE[1], 3), dtype=np.uint8) for _ in range(5)]


def _reference(fe, arrays, flip=False):
    """The model on the normalized batch, computed here without the extractor's code."""
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(fe.cfg.INPUT.PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(fe.cfg.INPUT.PIXEL_STD).view(1, 3, 1, 1)
    x = (x - mean) / std
    with torch.no_grad():
        f = fe.model(x)
        if flip:
            f = (f + fe.model(x.flip(3))) / 2
    return F.normalize(f, dim=1)


def test_all_input_kinds_agree_with_reference(extractor, arrays, tmp_path):
    expected = _reference(extractor, arrays)
    paths = []
    for i, a in enumerate(arrays):
        paths.append(str(tmp_path / f"{i}.png"))  # lossless, so pixels survive the round trip
        Image.fromarray(a).save(paths[-1])
    tensor_u8 = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. no non-writable-array warning for PIL inputs
        outputs = {
            "arrays": extractor(arrays),
            "pil": extractor([Image.fromarray(a) for a in arrays]),
            "paths": extractor(paths),
            "uint8 tensor": extractor(tensor_u8),
            "float tensor": extractor(tensor_u8.float() / 255),
        }
    for kind, feats in outputs.items():
        assert feats.shape == expected.shape and feats.dtype == torch.float32, kind
        torch.testing.assert_close(feats, expected, atol=1e-5, rtol=0, msg=kind)
    torch.testing.assert_close(expected.norm(dim=1), torch.ones(len(arrays)))


def test_flip_and_unnormalized_output(extractor, arrays):
    extractor.flip = True
    try:
        torch.testing.assert_close(extractor(arrays), _reference(extractor, arrays, flip=True),
                                   atol=1e-5, rtol=0)
    finally:
        extractor.flip = False
    extractor.normalize = False
    try:
        raw = extractor(arrays)
    finally:
        extractor.normalize = True
    torch.testing.assert_close(F.normalize(raw, dim=1), _reference(extractor, arrays),
                               atol=1e-5, rtol=0)
    assert not torch.allclose(raw.norm(dim=1), torch.ones(len(arrays)))


def test_other_sizes_are_resized(extractor, arrays):
    big = [np.repeat(np.repeat(a, 2, axis=0), 2, axis=1) for a in arrays[:2]]
    assert extractor(big).shape == (2, extractor(arrays[:1]).shape[1])


def test_bad_inputs_are_refused(extractor):
    with pytest.raises(ValueError, match="uint8"):
        extractor([np.zeros((SIZE[0], SIZE[1], 3), np.float32)])
    with pytest.raises(ValueError, match="HWC RGB"):
        extractor([np.zeros((SIZE[0], SIZE[1]), np.uint8)])
    with pytest.raises(ValueError, match="NCHW"):
        extractor(torch.zeros(2, 1, *SIZE))
    with pytest.raises(ValueError, match="No images"):
        extractor([])


def test_tensor_input_is_normalized_on_its_own_device(extractor):
    """An NCHW tensor already on an accelerator is normalized there (the mean and std follow
    it). The meta device stands in for CUDA: it checks devices without computing."""
    x = torch.empty(2, 3, *SIZE, device="meta")
    out = extractor.preprocess(x)
    assert out.device.type == "meta" and tuple(out.shape) == (2, 3, *SIZE)


def test_huge_jpeg_is_decoded_at_a_reduced_scale(tmp_path):
    """A 4000 x 4000 JPEG costs a fraction of its full-size float pixels (192 MB) in memory."""
    import subprocess
    import sys

    path = tmp_path / "huge.jpg"
    Image.new("RGB", (4000, 4000), (120, 60, 30)).save(path, quality=90)
    script = (
        "import resource, sys, torch\n"
        "from reid_pbn import FeatureExtractor\n"
        "from reid_pbn.config import get_cfg\n"
        "from reid_pbn.modeling import build_model\n"
        "cfg = get_cfg(); cfg.MODEL.BACKBONE.DEPTH = 18; cfg.MODEL.BACKBONE.PRETRAIN = False\n"
        "cfg.INPUT.SIZE_TEST = (32, 16)\n"
        "fe = FeatureExtractor(cfg=cfg, model=build_model(cfg, num_classes=3), device='cpu')\n"
        "fe([sys.argv[1]])\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "f = fe([sys.argv[1]])\n"
        "print(f.shape[0], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    warm = tmp_path / "small.jpg"
    Image.new("RGB", (64, 32)).save(warm)
    out = subprocess.run([sys.executable, "-c", script.replace("fe([sys.argv[1]])\nbefore",
                                                                "fe([sys.argv[2]])\nbefore"),
                          str(path), str(warm)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    n, grown_kib = map(int, out.stdout.split())
    assert n == 1 and grown_kib < 60 * 1024, grown_kib


class _NaNForSecond(torch.nn.Module):
    """Stands in for a model that returns NaN features for the second image of a batch."""

    def forward(self, x):
        f = x.mean(dim=(2, 3))
        f[1:2] = float("nan")
        return f


def test_non_finite_features_are_refused_naming_the_images(extractor, arrays, tmp_path):
    x = torch.from_numpy(np.stack(arrays[:3])).permute(0, 3, 1, 2).float() / 255
    x[2, 0, 5, 5] = float("nan")  # one NaN pixel poisons the whole feature vector
    with pytest.raises(ValueError, match=r"features: NaN or inf in 1 of 3 rows \(image 2\)"):
        extractor(x)
    paths = []
    for i, a in enumerate(arrays[:2]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(a).save(paths[-1])
    fe = FeatureExtractor(cfg=extractor.cfg, model=_NaNForSecond(), device="cpu")
    with pytest.raises(ValueError, match=r"\(image 1 \(.*1\.png\)\)\. Check these images"):
        fe(paths)


def test_single_inputs_and_lists_of_each_kind(extractor, arrays, tmp_path):
    path = tmp_path / "one.png"
    Image.fromarray(arrays[0]).save(path)
    expected = _reference(extractor, arrays[:1])
    pil = Image.fromarray(arrays[0])
    for kind, images in {"path": str(path), "PathLike": path, "PIL": pil, "array": arrays[0],
                         "list of paths": [str(path)], "list of PIL": [pil],
                         "list of arrays": [arrays[0]]}.items():
        feats = extractor(images)
        assert feats.shape == expected.shape, kind
        torch.testing.assert_close(feats, expected, atol=1e-5, rtol=0, msg=kind)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        extractor(str(tmp_path / "missing.jpg"))  # the whole path, not its first character


# Heights x widths other than SIZE_TEST (64, 32), and one JPEG large enough (>= 8x per side)
# for the reduced-scale decoding.
_ODD_SIZES = [(100, 37), (300, 140), (37, 100), (64, 32), (700, 300)]


def _market_tree(root, sizes):
    """A Market-1501 tree whose query and gallery images have the given (height, width)s."""
    base = root / "Market-1501-v15.09.15"
    rng = np.random.default_rng(1)

    def write(folder, name, size):
        (base / folder).mkdir(parents=True, exist_ok=True)
        # Smooth content, as in photos, so JPEG artefacts do not dominate the features.
        grad = np.linspace(0, 1, size[0] * size[1]).reshape(size[0], size[1], 1)
        a = (grad * rng.integers(40, 255, 3) + rng.integers(0, 40, (*size, 3))).clip(0, 255)
        Image.fromarray(a.astype(np.uint8)).save(base / folder / name, quality=90)

    for i in range(4):
        write("bounding_box_train", f"{i % 2 + 1:04d}_c1s1_{i:06d}_01.jpg", (64, 32))
    for i, size in enumerate(sizes):
        pid = i % 2 + 1
        write("query", f"{pid:04d}_c1s1_{i:06d}_00.jpg", size)
        write("bounding_box_test", f"{pid:04d}_c2s1_{i:06d}_00.jpg", size[::-1])


def test_api_features_equal_evaluation_features_for_other_sizes(tmp_path):
    from reid_pbn.data import build_test_loader
    from reid_pbn.evaluation import extract_features

    _market_tree(tmp_path, _ODD_SIZES)
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.DEPTH = 18
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.INPUT.SIZE_TEST = (64, 32)
    cfg.DATASETS.ROOT = str(tmp_path)
    cfg.DATASETS.NAMES = ("Market1501",)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.TEST.IMS_PER_BATCH = 3
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=2).eval()
    # What tools/cross_eval.py computes: the test loader, then the evaluation's extraction.
    loader, num_query = build_test_loader(cfg, "Market1501")
    evaluation = extract_features(model, loader, "cpu")
    assert num_query == len(_ODD_SIZES) and len(evaluation["paths"]) == 2 * len(_ODD_SIZES)
    fe = FeatureExtractor(cfg=cfg, model=model, device="cpu", batch_size=4)
    torch.testing.assert_close(fe(evaluation["paths"]), evaluation["feats"], atol=1e-6, rtol=0)
    # The same file as a PIL image, an array or a uint8 tensor gets the same preprocessing.
    path = evaluation["paths"][1]  # 300 x 140
    pil = Image.open(path).convert("RGB")
    array = np.asarray(pil)
    tensor_u8 = torch.from_numpy(array.copy()).permute(2, 0, 1)[None]
    for kind, images in {"PIL": pil, "array": array, "uint8 tensor": tensor_u8}.items():
        torch.testing.assert_close(fe(images), evaluation["feats"][1:2], atol=1e-6, rtol=0,
                                   msg=kind)
    # A float tensor is resized with torch's antialiased bicubic (PIL's filter without PIL's
    # rounding to uint8): close to, not equal to, the loader's features.
    float_feats = fe(tensor_u8.float() / 255)
    assert float((float_feats - evaluation["feats"][1:2]).abs().max()) < 0.05
