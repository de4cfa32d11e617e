"""Every endpoint of the service with good and bad input, through FastAPI's test client, and
persistence across a restart."""

from __future__ import annotations

import concurrent.futures
import io
import struct
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from reid_pbn.serving import Gallery
from reid_pbn.serving.app import ServiceConfig, create_app

LIMITS = ServiceConfig(max_upload_bytes=64 * 1024, max_pixels=200_000, max_k=20, max_files=4,
                       max_batch=4, batch_wait_ms=20, input_size=(64, 32))


def _client(folder, extractor, config=LIMITS):
    gallery = Gallery.open(folder)
    app = create_app(gallery, lambda ims: extractor(ims).numpy(), config=config,
                     model_info={"weights": "tiny.pth"})
    return TestClient(app, raise_server_exceptions=False), gallery


@pytest.fixture
def service(gallery_dir, extractor):
    client, gallery = _client(gallery_dir, extractor)
    with client:
        yield client, gallery
    gallery.close()


def _file(path, name=None):
    with open(path, "rb") as f:
        return {"file": (name or path.rsplit("/", 1)[-1], f.read(), "image/jpeg")}


def _png_header(width, height):
    """A PNG that declares ``width`` x ``height`` pixels but holds none (a decompression bomb)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _error(response, status, text):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status and text in body["error"], body
    return body


def test_health_stats_and_page(service):
    client, gallery = service
    assert client.get("/health").json()["status"] == "ok"
    stats = client.get("/stats").json()
    assert stats["gallery_size"] == len(gallery) == 6 and stats["index"]["type"] == "Flat"
    assert stats["model"]["weights"] == "tiny.pth" and stats["uptime_s"] >= 0
    page = client.get("/")
    assert page.status_code == 200 and 'id="query-file"' in page.text


def test_search_by_image_finds_itself_and_marks_true_matches(service, synthetic):
    client, _ = service
    path = synthetic.gallery[3][0]
    r = client.post("/search", files=_file(path), data={"k": "4"})
    assert r.status_code == 200, r.text
    body = r.json()
    top = body["results"][0]
    assert body["k"] == 4 and len(body["results"]) == 4
    assert top["name"] == path.rsplit("/", 1)[-1] and top["distance"] < 1e-4
    assert top["true_match"] is True and top["thumbnail"] == f"/thumbs/{top['id']}"
    assert body["query"]["pid"] == synthetic.gallery[3][1]
    assert all(r["true_match"] is (r["pid"] == body["query"]["pid"]) for r in body["results"])
    thumb = client.get(top["thumbnail"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    # An explicit pid overrides the file name's; k from the query string.
    r = client.post("/search?k=2", files=_file(path, "photo.jpg"), data={"pid": "-1"})
    assert r.json()["k"] == 2 and r.json()["results"][0]["true_match"] is None


def test_search_by_feature_vector(service, gallery_images):
    client, _ = service
    feat = gallery_images.features[1].tolist()
    body = client.post("/search", json={"feature": feat, "k": 3}).json()
    assert body["results"][0]["name"] == gallery_images.names[1]
    assert body["query"]["source"] == "feature"


@pytest.mark.parametrize("k,message", [("0", "at least 1"), ("-3", "at least 1"),
                                       ("21", "at most 20"), ("ten", "must be an integer")])
def test_bad_k(service, synthetic, k, message):
    client, _ = service
    _error(client.post("/search", files=_file(synthetic.gallery[0][0]), data={"k": k}), 400,
           message)
    if k.lstrip("-").isdigit():
        _error(client.post("/search", json={"feature": [0.0] * 512, "k": int(k)}), 400,
               message)


def test_bad_search_inputs(service):
    client, _ = service
    _error(client.post("/search", files={"file": ("notes.txt", b"hello", "text/plain")}), 415,
           "not an image")
    truncated = b"\xff\xd8\xff\xe0trunc"
    _error(client.post("/search", files={"file": ("x.jpg", truncated, "image/jpeg")}), 415, "")
    _error(client.post("/search", files={"file": ("e.jpg", b"", "image/jpeg")}), 400, "empty")
    _error(client.post("/search", data={"k": "3"},
                       files={"other": ("a.jpg", b"x", "image/jpeg")}), 400, "field 'file'")
    _error(client.post("/search", json={"feature": [1.0, 2.0], "k": 3}), 400,
           "the gallery holds 512-d features")
    _error(client.post("/search", json={"feature": ["a"] * 512}), 400, "list of numbers")
    _error(client.post("/search", json={"k": 3}), 400, "send an image")
    _error(client.post("/search", content=b"{not json", headers={"content-type":
                                                                 "application/json"}),
           400, "not valid JSON")
    _error(client.post("/search", content=b'{"feature": [NaN]}',
                       headers={"content-type": "application/json"}), 400, "")


def test_oversized_uploads_and_decompression_bombs(service):
    client, _ = service
    big = {"file": ("big.jpg", b"\xff" * (65 * 1024), "image/jpeg")}
    _error(client.post("/search", files=big), 413, "above the limit of 65536 bytes")

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(20):
            yield b"x" * 8192

    _error(client.post("/gallery", content=chunks(),
                       headers={"content-type": "application/json"}), 413, "above the limit")
    # Larger than the service's pixel limit, refused before decoding.
    im = io.BytesIO()
    Image.new("RGB", (1000, 300)).save(im, format="PNG")
    _error(client.post("/search", files={"file": ("wide.png", im.getvalue(), "image/png")}),
           413, "above the limit of 200000")
    # A 100 KB header claiming 10^10 pixels: PIL's own bomb check.
    bomb = _png_header(100_000, 100_000)
    _error(client.post("/search", files={"file": ("bomb.png", bomb, "image/png")}), 413,
           "pixels")


def test_add_images_with_metadata_then_delete(service, synthetic):
    client, gallery = service
    p1, p2 = synthetic.query[0][0], synthetic.query[1][0]
    files = [("file", _file(p)["file"]) for p in (p1, p2)]
    r = client.post("/gallery", files=files,
                    data={"metadata": '[{"site": "gate 3"}, {"site": "hall"}]'})
    assert r.status_code == 201, r.text
    added = r.json()["added"]
    assert r.json()["gallery_size"] == 8 and added[0]["metadata"] == {"site": "gate 3"}
    assert added[0]["pid"] == synthetic.query[0][1] and added[0]["camid"] == synthetic.query[0][2]
    item = client.get(f"/gallery/{added[1]['id']}").json()
    assert item["name"] == p2.rsplit("/", 1)[-1] and item["thumbnail"]
    found = client.post("/search", files=_file(p1), data={"k": "1"}).json()["results"][0]
    assert found["id"] == added[0]["id"]
    r = client.delete(f"/gallery/{added[0]['id']}")
    assert r.status_code == 200 and r.json()["gallery_size"] == 7
    _error(client.delete(f"/gallery/{added[0]['id']}"), 404, "no gallery item")
    _error(client.get(f"/thumbs/{added[0]['id']}"), 404, "no gallery item")
    # Explicit ids for all files.
    r = client.post("/gallery", files=[files[0]], data={"pid": "77", "camid": "2"})
    assert r.json()["added"][0]["pid"] == 77 and r.json()["added"][0]["camid"] == 2
    assert len(gallery) == 8


def test_add_features_and_bad_additions(service):
    client, gallery = service
    vec = np.ones(512, dtype=np.float32).tolist()
    r = client.post("/gallery", json={"features": [vec], "names": ["v"], "pids": [5],
                                      "metadata": {"src": "api"}})
    assert r.status_code == 201 and r.json()["added"][0]["thumbnail"] is None
    size = len(gallery)
    _error(client.post("/gallery", json={"features": [[1.0] * 7]}), 400, "512-d")
    _error(client.post("/gallery", json={"features": [vec], "pids": [1, 2]}), 400,
           "list of 1 values")
    _error(client.post("/gallery", json={"features": [vec], "metadata": [1]}), 400,
           "JSON object")
    _error(client.post("/gallery", files={"file": ("a.jpg", b"junk", "image/jpeg")}), 415, "")
    files = [("file", (f"{i}.jpg", b"x", "image/jpeg")) for i in range(5)]
    _error(client.post("/gallery", files=files), 400, "")
    _error(client.post("/gallery", files={"file": ("0001_c1.jpg", b"junk", "image/jpeg")},
                       data={"metadata": "{bad"}), 415, "")
    assert len(gallery) == size  # nothing half-added


def test_no_path_traversal_and_unknown_routes(service, gallery_dir):
    client, _ = service
    for url in ("/thumbs/..%2Fgallery.json", "/thumbs/../gallery.json", "/gallery.json",
                "/static/../../etc/passwd", "/thumbs/0123456789abcdef", "/items/x",
                "/gallery/0123456789abcdef", "/gallery/not-an-id"):
        r = client.get(url)
        assert r.status_code == 404 and "error" in r.json(), url
    _error(client.delete("/gallery/..%2F..%2Fgallery.json"), 404, "")
    assert (gallery_dir / "gallery.json").is_file()


def test_additions_survive_a_restart(gallery_dir, extractor, synthetic):
    client, gallery = _client(gallery_dir, extractor)
    with client:
        added = client.post("/gallery", files=_file(synthetic.query[2][0])).json()["added"][0]
    gallery.close()
    client, gallery = _client(gallery_dir, extractor)
    with client:
        top = client.post("/search", files=_file(synthetic.query[2][0])).json()["results"][0]
        assert top["id"] == added["id"] and top["distance"] < 1e-4
        assert client.get("/stats").json()["gallery_size"] == 7
    gallery.close()


def test_concurrent_searches_share_forward_passes(service, synthetic):
    client, _ = service
    paths = [p for p, _, _ in synthetic.gallery] * 2

    def one(path):
        return client.post("/search", files=_file(path), data={"k": "1"}).json()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, paths))
    assert all(a["results"][0]["name"] == p.rsplit("/", 1)[-1] for a, p in zip(answers, paths))
    batching = client.get("/stats").json()["batching"]
    assert batching["images"] == len(paths) and batching["batches"] < len(paths)
