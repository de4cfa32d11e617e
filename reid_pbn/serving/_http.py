"""HTTP plumbing of the service: JSON errors, the request-body limit, and parameter parsing."""

from __future__ import annotations

import json
import math

import numpy as np
from starlette.responses import JSONResponse

__all__ = ["ApiError", "BodyLimit", "parse_int", "parse_json_object_list", "parse_vectors"]


class ApiError(Exception):
    """An error answered as ``{"error": message, "status": status}``.

    Args:
        status: HTTP status.
        message: one sentence saying what is wrong and, where it helps, what to do.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> JSONResponse:
        """The JSON response."""
        return JSONResponse({"error": self.message, "status": self.status},
                            status_code=self.status)


class BodyLimit:
    """ASGI middleware refusing request bodies above ``max_bytes`` with a JSON 413.

    A declared ``Content-Length`` above the limit is refused before the body is read; a body
    sent without one (chunked) is counted as it arrives and refused once past the limit, so an
    oversized upload is never buffered whole.

    Args:
        app: the wrapped ASGI app.
        max_bytes: largest accepted body.
    """

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    def _too_large(self) -> ApiError:
        return ApiError(413, f"request body above the limit of {self.max_bytes} bytes "
                        f"({self.max_bytes / 2**20:.1f} MiB; the server's --max-upload-mb)")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await ApiError(400, "Content-Length is not a number").response()(
                    scope, receive, send)
                return
            if size > self.max_bytes:
                await self._too_large().response()(scope, receive, send)
                return
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, counted, send)


def parse_int(value, name: str, *, default: int | None = None, low: int | None = None,
              high: int | None = None) -> int:
    """An integer request parameter within bounds.

    Args:
        value: the raw value (str, int or None).
        name: the parameter's name, for messages.
        default: used when ``value`` is None or empty.
        low: smallest accepted value.
        high: largest accepted value.

    Raises:
        ApiError: 400 when missing, not an integer, or out of bounds.
    """
    if value is None or value == "":
        if default is None:
            raise ApiError(400, f"{name} is required")
        return default
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ApiError(400, f"{name} must be an integer, got {type(value).__name__}")
    try:
        number = int(value)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer, got {str(value)[:40]!r}") from None
    if low is not None and number < low:
        raise ApiError(400, f"{name} must be at least {low}, got {number}")
    if high is not None and number > high:
        raise ApiError(400, f"{name} must be at most {high}, got {number} (the server's "
                       f"limit; --max-k raises it)" if name == "k" else
                       f"{name} must be at most {high}, got {number}")
    return number


def parse_vectors(value, name: str, dim: int) -> np.ndarray:
    """A list of numbers (one vector) or a list of such lists, as a float32 (N, dim) array.

    Args:
        value: the JSON value.
        name: its field name, for messages.
        dim: the required length of each vector.

    Raises:
        ApiError: 400 for anything else, a wrong length, or a non-finite number.
    """
    rows = value if isinstance(value, list) and value and isinstance(value[0], list) else [value]
    for i, row in enumerate(rows):
        if not isinstance(row, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in row):
            raise ApiError(400, f"{name} must be a list of numbers (or a list of such lists)")
        if len(row) != dim:
            raise ApiError(400, f"{name}{f' row {i}' if len(rows) > 1 else ''} has {len(row)} "
                           f"values; the gallery holds {dim}-d features")
        if not all(math.isfinite(v) for v in row):
            raise ApiError(400, f"{name} holds NaN or infinite values")
    return np.asarray(rows, dtype=np.float32)


def parse_json_object_list(value, name: str, count: int) -> list[dict]:
    """Per-item metadata: one JSON object for all items or a list of ``count`` objects.

    Args:
        value: a JSON string (form field), a dict or a list (JSON body), or None.
        name: the field's name, for messages.
        count: the number of items.

    Raises:
        ApiError: 400 when it is not valid JSON or has the wrong shape.
    """
    if value is None or value == "":
        return [{} for _ in range(count)]
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise ApiError(400, f"{name} is not valid JSON") from None
    if isinstance(value, dict):
        return [dict(value) for _ in range(count)]
    if isinstance(value, list) and len(value) == count and all(isinstance(v, dict)
                                                               for v in value):
        return value
    raise ApiError(400, f"{name} must be a JSON object, or a list of {count} objects (one per "
                   "item)")
