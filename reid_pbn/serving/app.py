"""The HTTP service: search a gallery by image or feature vector, add and delete items, a page.

Endpoints (all answers JSON, errors as ``{"error": message, "status": code}``):

* ``GET /``: the page (query by image, ranked thumbnails, add images).
* ``GET /health``, ``GET /stats``: liveness; gallery size, model, index type, uptime, counters.
* ``POST /search``: multipart ``file`` (an image) with ``k`` (form or query string) and
  optionally ``pid``/``camid`` of the query, or JSON ``{"feature": [...], "k": 10}``.
* ``POST /gallery``: multipart ``file`` (repeatable) with optional ``pid``, ``camid`` and
  ``metadata`` (a JSON object, or a list of one per file), or JSON ``{"features": [[...]],
  "names", "pids", "camids", "metadata"}``. Answers 201 once the items are on disk.
* ``GET /gallery/{id}``, ``DELETE /gallery/{id}``; ``GET /thumbs/{id}``: an item's thumbnail.

No other file is served: thumbnails are found by validated item id, never by a client path.
Image uploads are embedded through a :class:`.batching.BatchQueue`, so concurrent requests
share forward passes.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import resources

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response

from ..version import __version__
from ._http import ApiError, BodyLimit, parse_int, parse_json_object_list, parse_vectors
from .batching import BatchQueue
from .gallery import Gallery, UnknownItemError
from .images import MAX_PIXELS, RejectedImageError, decode_image, display_name, make_thumbnail
from .images import parse_person as parse_market_name

__all__ = ["ServiceConfig", "create_app"]

Embed = Callable[[Sequence[np.ndarray]], np.ndarray]


@dataclass
class ServiceConfig:
    """Limits and batching of the service.

    Attributes:
        max_upload_bytes: largest request body (uploads and JSON).
        max_pixels: largest image (width x height) decoded; larger ones are refused before
            their pixels are decoded.
        max_k: largest ``k`` of a search.
        max_files: most files in one ``POST /gallery``.
        max_batch: most images per forward pass.
        batch_wait_ms: how long an image waits for others to share its forward pass.
        thumbnail_height: height of stored thumbnails.
        input_size: ``(height, width)`` the model resizes to (large JPEGs decode at a reduced
            scale close to it); None decodes at full size.
    """

    max_upload_bytes: int = 10 * 2**20
    max_pixels: int = MAX_PIXELS
    max_k: int = 100
    max_files: int = 32
    max_batch: int = 16
    batch_wait_ms: float = 5.0
    thumbnail_height: int = 128
    input_size: tuple[int, int] | None = None


def create_app(gallery: Gallery, embed: Embed, *, config: ServiceConfig | None = None,
               model_info: dict | None = None) -> FastAPI:
    """The FastAPI app serving ``gallery``.

    Args:
        gallery: an open, writable gallery.
        embed: maps a list of HWC uint8 RGB arrays to (N, D) features (e.g.
            ``lambda ims: FeatureExtractor(...)(ims).numpy()``); called from one worker thread.
        config: limits and batching.
        model_info: what ``/stats`` reports about the model (config file, weights, hash).

    Returns:
        The app; its lifespan starts and stops the batching worker.
    """
    config = config or ServiceConfig()
    state = _State(gallery, embed, config, model_info or {})
    app = FastAPI(title="reid_pbn gallery search", version=__version__, lifespan=state.lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, max_bytes=config.max_upload_bytes)
    _add_error_handlers(app, state)
    _add_routes(app, state)
    return app


class _State:
    """What the handlers share: the gallery, the batching queue, counters, start time."""

    def __init__(self, gallery: Gallery, embed: Embed, config: ServiceConfig,
                 model_info: dict) -> None:
        self.gallery, self.embed, self.config, self.model_info = gallery, embed, config, model_info
        self.queue: BatchQueue | None = None
        self.started = time.monotonic()
        self.counts: Counter = Counter()

    async def lifespan(self, app: FastAPI):
        self.queue = BatchQueue(self.embed, self.config.max_batch, self.config.batch_wait_ms)
        try:
            yield
        finally:
            self.queue.close()

    async def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        futures = [asyncio.wrap_future(self.queue.submit(im)) for im in images]
        return np.stack(await asyncio.gather(*futures)).astype(np.float32, copy=False)

    async def decode(self, upload: UploadFile) -> tuple[str, bytes, np.ndarray]:
        name = display_name(upload.filename) or "upload"
        data = await upload.read()
        if not data:
            raise ApiError(400, f"{name!r} is empty")
        try:
            rgb = await run_in_threadpool(decode_image, data, name=name,
                                          max_pixels=self.config.max_pixels,
                                          reduce_to=self.config.input_size)
        except RejectedImageError as e:
            raise ApiError(e.status, str(e)) from None
        return name, data, rgb

    def item_json(self, item: dict) -> dict:
        return {**item, "thumbnail": f"/thumbs/{item['id']}" if item["thumbnail"] else None}


def _add_error_handlers(app: FastAPI, state: _State) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        state.counts["errors"] += 1
        return exc.response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        state.counts["errors"] += 1
        message = "no such endpoint" if exc.status_code == 404 else str(exc.detail)
        return ApiError(exc.status_code, message).response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        state.counts["errors"] += 1
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return ApiError(422, f"{where}: {first.get('msg', 'invalid request')}").response()

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        state.counts["errors"] += 1
        return ApiError(500, f"internal error ({type(exc).__name__}); see the server log"
                        ).response()


async def _form(request: Request, max_files: int):
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return None
    return await request.form(max_files=max_files, max_fields=64)


async def _json(request: Request) -> dict:
    try:
        body = await request.json()
    except (ValueError, RecursionError):
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the JSON body must be an object")
    return body


def _uploads(form, max_files: int) -> list[UploadFile]:
    files = [f for f in form.getlist("file") if isinstance(f, UploadFile)]
    if not files:
        raise ApiError(400, "no image: send it as a multipart file in the field 'file'")
    if len(files) > max_files:
        raise ApiError(400, f"at most {max_files} files per request, got {len(files)}")
    return files


def _add_routes(app: FastAPI, state: _State) -> None:
    gallery, config = state.gallery, state.config
    page = (resources.files(__package__) / "static" / "index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def index_page() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "gallery_size": len(gallery),
                "uptime_s": round(time.monotonic() - state.started, 3)}

    @app.get("/stats")
    async def stats() -> dict:
        q = state.queue
        info = gallery.info
        return {
            "gallery_size": len(gallery), "feature_dim": gallery.dim,
            "uptime_s": round(time.monotonic() - state.started, 3),
            "index": {"type": gallery.index_type, "requested": info["index"]["requested"],
                      "metric": gallery.metric},
            "model": {**state.model_info, "gallery_model": info["provenance"].get("model")},
            "limits": asdict(config),
            "requests": dict(state.counts),
            "batching": {"batches": q.batches if q else 0, "images": q.items if q else 0,
                         "mean_batch": round(q.items / q.batches, 2) if q and q.batches else 0},
            "version": __version__,
        }

    @app.post("/search")
    async def search(request: Request) -> dict:
        state.counts["search"] += 1
        start = time.perf_counter()
        form = await _form(request, 1)
        k_raw = request.query_params.get("k")
        if form is not None:
            # Parameters first: a bad k costs no decoding and no forward pass.
            k = parse_int(form.get("k", k_raw), "k", default=min(10, config.max_k), low=1,
                          high=config.max_k)
            upload = _uploads(form, 1)[0]
            name, _, rgb = await state.decode(upload)
            pid, camid = parse_market_name(name)
            pid = parse_int(form.get("pid"), "pid", default=pid, low=-1)
            camid = parse_int(form.get("camid"), "camid", default=camid, low=-1)
            feats = await state.embed_images([rgb])
            query = {"source": "image", "name": name, "pid": pid, "camid": camid}
        else:
            body = await _json(request)
            if "feature" not in body:
                raise ApiError(400, "send an image (multipart field 'file') or JSON "
                               "{'feature': [...], 'k': 10}")
            k = parse_int(body.get("k", k_raw), "k", default=min(10, config.max_k), low=1,
                          high=config.max_k)
            feats = parse_vectors(body["feature"], "feature", gallery.dim)
            if len(feats) != 1:
                raise ApiError(400, "'feature' must be one vector")
            pid = parse_int(body.get("pid"), "pid", default=-1, low=-1)
            query = {"source": "feature", "name": None, "pid": pid, "camid": -1}
        embedded = time.perf_counter()
        hits = (await run_in_threadpool(gallery.search, feats, k))[0]
        results = []
        for hit in hits:
            item = state.item_json(hit.item)
            known = query["pid"] >= 0 and item["pid"] >= 0
            results.append({"rank": hit.rank, "distance": hit.distance, **item,
                            "true_match": (item["pid"] == query["pid"]) if known else None})
        done = time.perf_counter()
        return {"query": query, "k": k, "gallery_size": len(gallery), "results": results,
                "timing_ms": {"embed": round(1000 * (embedded - start), 2),
                              "search": round(1000 * (done - embedded), 2)}}

    @app.post("/gallery", status_code=201)
    async def add(request: Request) -> dict:
        state.counts["add"] += 1
        form = await _form(request, config.max_files)
        if form is not None:
            decoded = [await state.decode(f) for f in _uploads(form, config.max_files)]
            names = [name for name, _, _ in decoded]
            parsed = [parse_market_name(n) for n in names]
            pid = form.get("pid")
            camid = form.get("camid")
            pids = [parse_int(pid, "pid", default=p, low=-1) for p, _ in parsed]
            camids = [parse_int(camid, "camid", default=c, low=-1) for _, c in parsed]
            metadata = parse_json_object_list(form.get("metadata"), "metadata", len(names))
            feats = await state.embed_images([rgb for _, _, rgb in decoded])
            thumbs = await run_in_threadpool(
                lambda: [make_thumbnail(rgb, config.thumbnail_height) for _, _, rgb in decoded])
        else:
            body = await _json(request)
            if "features" not in body:
                raise ApiError(400, "send images (multipart field 'file') or JSON "
                               "{'features': [[...]], 'names', 'pids', 'camids', 'metadata'}")
            feats = parse_vectors(body["features"], "features", gallery.dim)
            n = len(feats)
            if n > config.max_files * 32:
                raise ApiError(400, f"at most {config.max_files * 32} vectors per request")
            names = _column(body, "names", n, str, "")
            pids = [parse_int(v, "pids", default=-1, low=-1) for v in _column(body, "pids", n)]
            camids = [parse_int(v, "camids", default=-1, low=-1)
                      for v in _column(body, "camids", n)]
            metadata = parse_json_object_list(body.get("metadata"), "metadata", n)
            thumbs = None
        try:
            items = await run_in_threadpool(
                lambda: gallery.add(feats, names=names, pids=pids, camids=camids,
                                    metadata=metadata, thumbnails=thumbs))
        except ValueError as e:  # e.g. non-finite features from the model
            raise ApiError(400, str(e)) from None
        return {"added": [state.item_json(it) for it in items], "gallery_size": len(gallery)}

    @app.get("/gallery/{item_id}")
    async def get_item(item_id: str) -> dict:
        return state.item_json(_lookup(gallery, item_id))

    @app.delete("/gallery/{item_id}")
    async def delete_item(item_id: str) -> dict:
        state.counts["delete"] += 1
        _lookup(gallery, item_id)
        try:
            await run_in_threadpool(gallery.delete, item_id)
        except UnknownItemError:  # deleted by a concurrent request meanwhile
            raise ApiError(404, f"no gallery item {item_id!r}") from None
        return {"deleted": item_id, "gallery_size": len(gallery)}

    @app.get("/thumbs/{item_id}")
    async def thumbnail(item_id: str) -> Response:
        _lookup(gallery, item_id)
        path = gallery.thumbnail_path(item_id)
        if path is None:
            raise ApiError(404, f"item {item_id!r} has no thumbnail")
        return FileResponse(path, media_type="image/jpeg",
                            headers={"Cache-Control": "max-age=3600"})


def _lookup(gallery: Gallery, item_id: str) -> dict:
    try:
        return gallery.get(item_id)
    except UnknownItemError:
        raise ApiError(404, f"no gallery item {item_id[:40]!r}") from None


def _column(body: dict, key: str, n: int, kind: type | None = None, fill=None) -> list:
    values = body.get(key)
    if values is None:
        return [fill] * n
    if not isinstance(values, list) or len(values) != n:
        raise ApiError(400, f"{key} must be a list of {n} values (one per vector)")
    if kind is not None and not all(isinstance(v, kind) for v in values):
        raise ApiError(400, f"{key} must hold {kind.__name__} values")
    return values
