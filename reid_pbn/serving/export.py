"""Exporting a re-ID model to ONNX or TorchScript, with a parity check against the eager model.

Input contract of an exported model (also stored in the file, see :func:`export_model`):
``images``, float32 NCHW with a dynamic batch axis, RGB, at ``INPUT.SIZE_TEST``, normalized as
``(pixel / 255 - INPUT.PIXEL_MEAN) / INPUT.PIXEL_STD`` -- exactly what
``FeatureExtractor.preprocess`` returns. Output: ``features``, float32 (N, D), L2-normalized
unless exported with ``normalize=False``.

ONNX export first tries PyTorch's ``torch.export``-based exporter (the default since PyTorch
2.9). Models it cannot capture fall back to the TorchScript-based exporter, which records the
operations run on an example batch: a BNE model routes every image through every domain path
with ``torch.unique`` over the domain ids, a data-dependent step ``torch.export`` refuses, but
the combined path (all D domain paths, Wasserstein weights, weighted sum) is a fixed graph for
any batch size, and that graph is what the fallback exports. The parity check then runs the
exported file at batch sizes other than the example's, so a graph that baked in the example's
batch size fails it.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import re
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..layers import DSBN2d
from .provenance import input_contract

__all__ = ["FORMATS", "ExportError", "ExportReport", "FeatureModel", "ParityError",
           "check_parity", "example_inputs", "export_model", "feature_dim", "load_exported"]

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
INPUT_NAME, OUTPUT_NAME = "images", "features"
#: Largest accepted ``1 - cos`` between exported and eager features.
PARITY_TOLERANCE = 1e-4
METADATA_KEY = "reid_pbn"


class ExportError(RuntimeError):
    """The model could not be exported (or a package the format needs is missing)."""


class ParityError(RuntimeError):
    """The exported model's features differ from the eager model's beyond the tolerance."""


class FeatureModel(nn.Module):
    """The exported function: images in, (optionally L2-normalized) features out.

    Args:
        model: a re-ID model in eval mode (images (N, 3, H, W) to features (N, D)).
        normalize: L2-normalize the features, as ``FeatureExtractor`` does by default.
    """

    def __init__(self, model: nn.Module, normalize: bool = True) -> None:
        super().__init__()
        self.model = model
        self.normalize = normalize

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.model(images).float()
        return F.normalize(feats, dim=1) if self.normalize else feats


@dataclass
class ExportReport:
    """What :func:`export_model` did.

    Attributes:
        path: the written file.
        format: ``"onnx"`` or ``"torchscript"``.
        exporter: ``"dynamo"`` or ``"torchscript-based"`` (ONNX), ``"trace"`` (TorchScript).
        fallback_reason: why the ``torch.export``-based ONNX exporter was not used, if so.
        max_cosine_distance: worst ``1 - cos`` of the parity check (None when skipped).
        batch_sizes: batch sizes the parity check ran.
        seconds: export and check time.
    """

    path: str
    format: str
    exporter: str
    fallback_reason: str | None
    max_cosine_distance: float | None
    batch_sizes: tuple[int, ...]
    seconds: float


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportError(f"this export needs the '{module}' package: pip install "
                          "'reid_pbn[export]'") from None


#: Why a BNE model goes to the TorchScript-based ONNX exporter.
BNE_REASON = ("BNE routes each image through every domain path with torch.unique over the "
              "domain ids, a data-dependent step torch.export cannot capture")


@contextlib.contextmanager
def _quiet_export():
    """Hides what every export of these models prints and that says nothing new.

    Tracing turns shapes and ``torch.unique(...).tolist()`` into constants (intended: the parity
    check at other batch sizes catches a wrong constant), torch.jit and the TorchScript-based
    exporter announce their deprecation on every call, and a failed ``torch.export`` prints the
    whole captured graph; that text goes to the debug log instead.
    """
    out = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(out):
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        # InstanceNorm (IBN) without running statistics always normalizes with the input's own
        # statistics, which is what "train=True" exports; the exporter warns about it anyway.
        warnings.filterwarnings("ignore", message=".*'instance_norm' is set to train=True")
        try:
            yield
        finally:
            if out.getvalue():
                logger.debug("exporter output:\n%s", out.getvalue())


def _is_bne(model: nn.Module) -> bool:
    return any(isinstance(m, DSBN2d) and m.num_domains > 1 for m in model.modules())


def example_inputs(cfg, batch_size: int, seed: int = 0) -> torch.Tensor:
    """Random images normalized by the input contract (for tracing and parity checks).

    Args:
        cfg: the model's config.
        batch_size: images in the batch.
        seed: generator seed.

    Returns:
        (batch_size, 3, H, W) float32.
    """
    h, w = (int(v) for v in cfg.INPUT.SIZE_TEST)
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(batch_size, 3, h, w, generator=g)
    mean = torch.tensor(cfg.INPUT.PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(cfg.INPUT.PIXEL_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


def feature_dim(model: nn.Module, cfg) -> int:
    """The dimension of the model's features (one forward pass on a dummy image).

    Args:
        model: the re-ID model in eval mode.
        cfg: its config (input size).
    """
    with torch.no_grad():
        return int(model(example_inputs(cfg, 1)).shape[1])


def export_model(
    model: nn.Module,
    cfg,
    fmt: str,
    output: str | os.PathLike,
    *,
    normalize: bool = True,
    provenance: dict | None = None,
    exporter: str = "auto",
    check: bool = True,
    tolerance: float = PARITY_TOLERANCE,
) -> ExportReport:
    """Exports ``model`` and checks the file against it.

    Args:
        model: the re-ID model (eval mode, CPU).
        cfg: its config (input size and normalization).
        fmt: ``"onnx"`` or ``"torchscript"``.
        output: the file to write.
        normalize: L2-normalize the exported features.
        provenance: a record stored in the file beside the input contract (ONNX
            ``metadata_props`` / TorchScript extra file ``reid_pbn.json``, key ``reid_pbn``).
        exporter: ONNX only: ``"auto"`` (``torch.export``-based, else TorchScript-based),
            ``"dynamo"`` or ``"torchscript"``.
        check: run :func:`check_parity` after writing.
        tolerance: largest accepted ``1 - cos``.

    Returns:
        The report.

    Raises:
        ValueError: unknown format or exporter.
        ExportError: the export failed or a needed package is missing.
        ParityError: the exported features differ from the eager ones.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ValueError(f"exporter must be auto, dynamo or torchscript, got {exporter!r}")
    start = time.perf_counter()
    wrapped = FeatureModel(model.cpu().eval(), normalize).eval()
    example = example_inputs(cfg, 2)
    with torch.no_grad():
        dim = int(wrapped(example).shape[1])
    meta = {"input": {**input_contract(cfg), "name": INPUT_NAME, "shape": ["batch", 3,
                                                                           *cfg.INPUT.SIZE_TEST]},
            "output": {"name": OUTPUT_NAME, "shape": ["batch", dim],
                       "normalization": "l2" if normalize else "none"},
            "provenance": provenance or {}}
    path = os.fspath(output)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    reason = None
    if fmt == "torchscript":
        used = "trace"
        _export_torchscript(wrapped, example, path, meta)
    else:
        used, reason = _export_onnx(wrapped, example, path, meta, exporter)
    worst = None
    batch_sizes = (1, 3)
    if check:
        try:
            worst = check_parity(wrapped, path, fmt, cfg, batch_sizes=batch_sizes,
                                 tolerance=tolerance)
        except ParityError as e:
            raise ParityError(f"{e}; {path} was written but does not reproduce the model: do "
                              "not deploy it") from None
    return ExportReport(path, fmt, used, reason, worst, batch_sizes,
                        time.perf_counter() - start)


def _export_torchscript(wrapped: nn.Module, example: torch.Tensor, path: str, meta: dict) -> None:
    try:
        with _quiet_export(), torch.no_grad():
            traced = torch.jit.trace(wrapped, example, check_trace=False)
            torch.jit.save(traced, path,
                           _extra_files={f"{METADATA_KEY}.json": json.dumps(meta)})
    except Exception as e:  # noqa: BLE001 - any tracer failure is reported as one error
        raise ExportError(f"TorchScript tracing failed: {type(e).__name__}: {e}") from e


def _export_onnx(wrapped: nn.Module, example: torch.Tensor, path: str, meta: dict,
                 exporter: str) -> tuple[str, str | None]:
    onnx = _require("onnx")
    reason = None
    if exporter == "auto" and _is_bne(wrapped):
        reason = BNE_REASON
        logger.info("%s; using the TorchScript-based ONNX exporter, which records the combined "
                    "path of all domains", reason)
    elif exporter in ("auto", "dynamo"):
        _require("onnxscript")  # the torch.export-based exporter emits through it
        try:
            with _quiet_export():
                torch.onnx.export(
                    wrapped, (example,), path, dynamo=True, verbose=False,
                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                    dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False)
            used = "dynamo"
        except Exception as e:  # noqa: BLE001 - the fallback below or a clear error
            reason = _first_line(e)
            if exporter == "dynamo":
                raise ExportError(f"torch.export-based ONNX export failed: {reason}") from e
            logger.info("torch.export cannot capture this model (%s); using the TorchScript-"
                        "based ONNX exporter, which records the traced graph", reason)
    if reason is not None or exporter == "torchscript":
        try:
            with _quiet_export(), torch.no_grad():
                torch.onnx.export(
                    wrapped, (example,), path, dynamo=False, input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
        except Exception as e:  # noqa: BLE001 - reported as one error
            raise ExportError(f"ONNX export failed: {type(e).__name__}: {_first_line(e)}") from e
        used = "torchscript-based"
    model = onnx.load(path)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps({**meta, "exporter": used})
    onnx.save(model, path)
    return used, reason


def _first_line(e: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def load_exported(path: str | os.PathLike, fmt: str):
    """Loads an exported model as a function from a float32 NCHW array to features.

    Args:
        path: the file written by :func:`export_model`.
        fmt: ``"onnx"`` (ONNX Runtime, CPU) or ``"torchscript"``.

    Returns:
        ``(run, metadata)``: ``run(np.ndarray) -> np.ndarray`` and the stored record.
    """
    path = os.fspath(path)
    if fmt == "onnx":
        ort = _require("onnxruntime")
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        meta = json.loads(session.get_modelmeta().custom_metadata_map.get(METADATA_KEY, "{}"))
        name = session.get_inputs()[0].name
        return (lambda x: session.run(None, {name: np.ascontiguousarray(x, np.float32)})[0]), meta
    files = {f"{METADATA_KEY}.json": ""}
    with _quiet_export():
        module = torch.jit.load(path, map_location="cpu", _extra_files=files)
    meta = json.loads(files[f"{METADATA_KEY}.json"] or "{}")

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()

    return run, meta


def check_parity(
    reference: nn.Module,
    path: str | os.PathLike,
    fmt: str,
    cfg,
    *,
    batch_sizes: tuple[int, ...] = (1, 3),
    tolerance: float = PARITY_TOLERANCE,
) -> float:
    """Compares an exported file with the eager model on the same random normalized images.

    The batch sizes differ from the export example's (2), so a graph that fixed the batch size
    fails here instead of in production.

    Args:
        reference: the eager function (a :class:`FeatureModel` or any images-to-features
            module; its features are compared by cosine, so normalization does not matter).
        path: the exported file.
        fmt: ``"onnx"`` or ``"torchscript"``.
        cfg: the model's config (input size and normalization).
        batch_sizes: batch sizes to run.
        tolerance: largest accepted ``1 - cos``.

    Returns:
        The worst ``1 - cos`` over all images.

    Raises:
        ParityError: a row above ``tolerance``, a wrong output shape, or non-finite output.
    """
    run, _ = load_exported(path, fmt)
    worst = 0.0
    for i, n in enumerate(batch_sizes):
        x = example_inputs(cfg, n, seed=100 + i)
        with torch.no_grad():
            want = reference(x).float().numpy()
        got = np.asarray(run(x.numpy()), dtype=np.float64)
        if got.shape != want.shape or not np.isfinite(got).all():
            raise ParityError(f"{fmt} model at batch size {n}: output {got.shape} (finite: "
                              f"{bool(np.isfinite(got).all())}), eager {want.shape}")
        cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
        worst = max(worst, float((1.0 - cos).max()))
    if not worst <= tolerance:
        raise ParityError(f"{fmt} model differs from the eager model: worst 1 - cos = "
                          f"{worst:.3g} > {tolerance:g} (batch sizes {list(batch_sizes)})")
    return worst
