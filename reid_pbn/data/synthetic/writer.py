"""Writing a synthetic domain as a Market-1501 tree: the images in a fixed order, the manifest
of parameters, and the atomic, parameter-keyed materialization of the tree under a data root."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict

from PIL import Image

from ._common import SS, keyed_rng
from .camera import make_camera
from .render import GENERATOR_VERSION, Shift, make_identity, render
from .styles import DOMAIN_STYLES

__all__ = [
    "MANIFEST",
    "SPLIT_DIRS",
    "domain_params",
    "generate_domain",
    "materialize",
    "render_images",
    "write_images",
    "write_tree",
]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SPLIT_DIRS = ("bounding_box_train", "query", "bounding_box_test")


def generate_domain(
    root: str,
    name: str,
    *,
    num_ids: int = 120,
    num_cams: int = 4,
    imgs_per_cam: int = 3,
    size: tuple[int, int] = (128, 64),
    seed: int = 0,
    num_distractors: int | None = None,
    force: bool = False,
) -> str:
    """Write (or reuse) a synthetic domain under ``<root>/<name>`` in Market-1501's format.

    Identities ``1..num_ids // 2`` form the training split; the others are tested: for each
    test identity, the first image from ``num_cams // 2`` randomly chosen cameras goes to
    ``query/`` and the rest to ``bounding_box_test/``, which also receives
    ``num_distractors`` images of random persons with pid ``0000``. A ``manifest.json`` records
    the parameters; a tree written with other parameters (or missing files) is regenerated.
    The tree is written into a temporary folder and renamed into place, so an interrupted
    run never leaves half a tree under the final name.

    Args:
        root: data root.
        name: domain, a key of :data:`DOMAIN_STYLES` (``"SyntheticA"``, ...).
        num_ids: identities (train and test halves).
        num_cams: cameras, 2..9.
        imgs_per_cam: images per identity and camera.
        size: image size ``(height, width)``.
        seed: generator seed; the same seed writes byte-identical files.
        num_distractors: distractor images in the gallery (default ``max(2, num_ids // 10)``).
        force: regenerate even when a matching tree exists.

    Returns:
        The domain's folder.

    Raises:
        ValueError: invalid parameters.
    """
    params = domain_params(name, num_ids, num_cams, imgs_per_cam, size, seed, num_distractors)
    return materialize(root, name, params, lambda out: write_tree(out, params),
                       {"style": asdict(DOMAIN_STYLES[name])}, force=force)


def materialize(root: str, folder: str, params: dict, write: Callable[[str], dict],
                extra: dict, *, force: bool = False) -> str:
    """Write a generated tree under ``<root>/<folder>`` atomically, unless it is up to date.

    Args:
        root: data root.
        folder: the tree's folder name under the root.
        params: generation parameters, recorded in the manifest; a tree whose manifest holds
            other parameters (or which misses files) is rewritten.
        write: writes the images into the folder it is given; returns image counts per split.
        extra: more manifest entries (after ``params`` and ``counts``).
        force: rewrite even when the tree is up to date.

    Returns:
        The tree's folder.
    """
    root = os.path.abspath(root)
    if not force:
        folder = _folder_for(root, folder, params)
    target = os.path.join(root, folder)
    if not force and _is_complete(target, params):
        return target
    os.makedirs(root, exist_ok=True)
    _remove_stale_temps(root, folder)
    tmp = tempfile.mkdtemp(prefix=f".{folder}.tmp-", dir=root)
    try:
        t0 = time.perf_counter()
        counts = write(tmp)
        manifest = {"params": params, "counts": counts, **extra}
        with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
        os.chmod(tmp, 0o755)
        if os.path.exists(target):
            if not force and _is_complete(target, params):  # another process finished first
                shutil.rmtree(tmp, ignore_errors=True)
                return target
            old = tempfile.mkdtemp(prefix=f".{folder}.old-", dir=root)
            os.rename(target, os.path.join(old, folder))
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.rename(tmp, target)
            except OSError:
                if not _is_complete(target, params):
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        logger.info(
            "Generated synthetic data %s (%d images) in %s in %.1f s",
            folder, sum(counts.values()), target, time.perf_counter() - t0,
        )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def render_images(
    params: dict, splits: tuple[str, ...] = SPLIT_DIRS, shift: Shift | None = None
) -> Iterator[tuple[str, str, Image.Image, int]]:
    """Render the images of the domain ``params`` describes, in a fixed order.

    Every image draws from its own generator keyed by (seed, domain, image), so leaving out a
    split or shifting the rendering does not change the other images.

    Args:
        params: generation parameters from :func:`domain_params`.
        splits: the split folders to render (the others are skipped, not drawn).
        shift: hooks that change the cameras and scenes (``None``: the domain itself).

    Yields:
        ``(split folder, file name, image, JPEG quality)``.
    """
    style = DOMAIN_STYLES[params["domain"]]
    H, W = params["size"]
    seed, code = params["seed"], style.code
    n_ids, n_cams, n_imgs = params["num_ids"], params["num_cams"], params["imgs_per_cam"]
    shift = shift or Shift()
    cams = [shift.camera(c, make_camera(style, keyed_rng(seed, code, 1, c), c, H * SS, W * SS))
            for c in range(n_cams)]
    n_train = n_ids // 2

    def name(pid: int, c: int, frame: int, box: int) -> str:
        return f"{pid:04d}_c{c + 1}s1_{frame:06d}_{box:02d}.jpg"

    for pid in range(1, n_ids + 1):
        if pid <= n_train and "bounding_box_train" not in splits:
            continue
        person = make_identity(keyed_rng(seed, code, 2, pid), style.lower_value)
        q_rng = keyed_rng(seed, code, 3, pid)
        query_cams = set(q_rng.choice(n_cams, size=max(1, n_cams // 2), replace=False).tolist())
        for c in range(n_cams):
            for k in range(n_imgs):
                if pid <= n_train:
                    split = "bounding_box_train"
                else:
                    split = "query" if (c in query_cams and k == 0) else "bounding_box_test"
                if split not in splits:
                    continue
                img = render(person, cams[c], keyed_rng(seed, code, 4, pid, c, k), (H, W),
                             shift.edit((4, pid, c, k)))
                yield split, name(pid, c, 25 * (pid * n_imgs + k) + 1, 1), img, cams[c].quality
    if "bounding_box_test" not in splits:
        return
    for j in range(params["num_distractors"]):
        r = keyed_rng(seed, code, 5, j)
        person = make_identity(r, style.lower_value)
        c = int(r.integers(n_cams))
        img = render(person, cams[c], r, (H, W), shift.edit((5, j)))
        yield "bounding_box_test", name(0, c, 25 * j + 1, 2), img, cams[c].quality


def write_images(out_dir: str, images: Iterable[tuple[str, str, Image.Image, int]]) -> dict:
    """Save rendered images as JPEGs in their split folders.

    Args:
        out_dir: the tree's folder.
        images: ``(split folder, file name, image, JPEG quality)`` items.

    Returns:
        Images written per split folder.
    """
    counts = dict.fromkeys(SPLIT_DIRS, 0)
    for sub in SPLIT_DIRS:
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    for split, fname, img, quality in images:
        img.save(os.path.join(out_dir, split, fname), quality=quality)
        counts[split] += 1
    return counts


def write_tree(out_dir: str, params: dict) -> dict:
    """Render and write every split of the domain ``params`` describes.

    Args:
        out_dir: the tree's folder.
        params: generation parameters from :func:`domain_params`.

    Returns:
        Images written per split folder.
    """
    return write_images(out_dir, render_images(params))


def domain_params(name: str, num_ids: int, num_cams: int, imgs_per_cam: int, size, seed: int,
                  num_distractors: int | None) -> dict:
    """Check a domain's generation parameters and return them as the manifest records them.

    Args:
        name: domain, a key of :data:`~.styles.DOMAIN_STYLES`.
        num_ids: identities (train and test halves), 2..9999.
        num_cams: cameras, 2..9.
        imgs_per_cam: images per identity and camera, >= 1.
        size: image size ``(height, width)``, both >= 16.
        seed: generator seed.
        num_distractors: distractor images (``None``: ``max(2, num_ids // 10)``).

    Returns:
        The parameters, with :data:`~.render.GENERATOR_VERSION`.

    Raises:
        ValueError: an invalid parameter.
    """
    if name not in DOMAIN_STYLES:
        raise ValueError(f"Unknown synthetic domain '{name}'; known: {', '.join(DOMAIN_STYLES)}")
    size = [int(v) for v in size]
    if len(size) != 2 or min(size) < 16:
        raise ValueError(f"size must be (height, width) with both >= 16, got {size}")
    if num_ids < 2:
        raise ValueError(f"num_ids must be >= 2 (half train, half test), got {num_ids}")
    if not 2 <= num_cams <= 9:
        raise ValueError(
            f"num_cams must be in 2..9 (Market-1501 names hold one camera digit), got {num_cams}"
        )
    if imgs_per_cam < 1:
        raise ValueError(f"imgs_per_cam must be >= 1, got {imgs_per_cam}")
    if num_ids > 9999:
        raise ValueError(f"num_ids must be <= 9999 (4-digit pids), got {num_ids}")
    if num_distractors is None:
        num_distractors = max(2, num_ids // 10)
    return {
        "domain": name, "num_ids": int(num_ids), "num_cams": int(num_cams),
        "imgs_per_cam": int(imgs_per_cam), "size": size, "seed": int(seed),
        "num_distractors": int(num_distractors), "generator_version": GENERATOR_VERSION,
    }


def _read_manifest(path: str) -> dict | None:
    try:
        with open(os.path.join(path, MANIFEST), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _is_complete(path: str, params: dict) -> bool:
    """The tree at ``path`` was written with ``params`` and still holds all its files."""
    man = _read_manifest(path)
    if man is None or man.get("params") != params:
        return False
    for split, n in man.get("counts", {}).items():
        d = os.path.join(path, split)
        if not os.path.isdir(d) or sum(f.endswith(".jpg") for f in os.listdir(d)) != n:
            return False
    return True


def _folder_for(root: str, folder: str, params: dict) -> str:
    """The folder that holds (or will hold) the tree generated with ``params``.

    The plain name belongs to the parameters first generated there. A complete tree of other
    parameters (same generator version) is never replaced, since another job may be reading
    it: other parameters get ``<folder>+<hash of the parameters>``. Incomplete trees and trees
    of an older generator version are rewritten in place.
    """
    path = os.path.join(root, folder)
    man = _read_manifest(path)
    held = man.get("params") if isinstance(man, dict) else None
    if (not isinstance(held, dict) or held == params
            or held.get("generator_version") != params.get("generator_version")
            or not _is_complete(path, held)):
        return folder
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    keyed = f"{folder}+{digest}"
    logger.info("%s holds %s generated with other parameters; using %s for these", path,
                folder, keyed)
    return keyed


def _remove_stale_temps(root: str, name: str, max_age_s: float = 3600.0) -> None:
    """Delete temporary trees that killed generations left behind (older than an hour)."""
    now = time.time()
    for entry in os.listdir(root):
        if entry.startswith((f".{name}.tmp-", f".{name}.old-")):
            path = os.path.join(root, entry)
            try:
                if now - os.path.getmtime(path) > max_age_s:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                pass
