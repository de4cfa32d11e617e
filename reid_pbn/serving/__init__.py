"""Serving a re-ID model: export (ONNX, TorchScript), persistent galleries with provenance, and
an HTTP service with a page (``reid_pbn.serving.app``, which needs the ``serve`` extra).

Nothing here imports FastAPI, ONNX or ONNX Runtime at import time, so the export and gallery
tools work with only the packages they need.
"""

from .export import ExportError, ExportReport, ParityError, check_parity, export_model
from .gallery import Gallery, GalleryBusyError, GalleryFormatError, Hit, UnknownItemError
from .index_params import IndexChoice, choose_index
from .provenance import file_sha256, input_contract, model_provenance, provenance_mismatches

__all__ = [
    "ExportError", "ExportReport", "Gallery", "GalleryBusyError", "GalleryFormatError", "Hit",
    "IndexChoice", "ParityError", "UnknownItemError", "check_parity", "choose_index",
    "export_model", "file_sha256", "input_contract", "model_provenance", "provenance_mismatches",
]
