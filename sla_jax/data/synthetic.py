"""A small synthetic defect-inspection dataset in MVTec AD layout.

Three procedurally generated categories, each good image a new random
instance: ``weave`` (woven fabric, RGB PNG), ``tile`` (mottled stone, grayscale
PNG) and ``washer`` (a metal tab washer on a flat black belt, RGB JPEG). Defects are
drawn the way real ones look, never as pasted or constant rectangles:
scratches (thin curved bright or dark lines), cracks (jagged branching dark
random walks), spots and stains (soft irregular tinted blobs) and missing
pieces (an irregular chunk of the object replaced by background). Every
defect image has an exact pixel mask.

Command line: ``python -m sla_jax.demo OUT_DIR [--seed N]``.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from sla_jax.data.defects import _crack, _missing, _ring_scratch, _scratch, _spot, _stain
from sla_jax.data.scenes import Scene, _tile, _washer, _weave

MARKER = ".sla_demo_complete.json"
_FORMAT_VERSION = 2  # 2: the washer's belt is flat black (edits there change nothing)
_COVERAGE = (0.01, 0.08)
_MAX_DRAWS = 100


class Category(NamedTuple):
    """How to render one category, its defects, and how to save it."""

    render: Callable[[np.random.Generator, int], Scene]
    defects: dict[str, Callable[[np.random.Generator, Scene], tuple[np.ndarray, np.ndarray]]]
    mode: str  # PIL mode of the saved file
    suffix: str


# ---------------------------------------------------------------- noise


CATEGORIES: dict[str, Category] = {
    "weave": Category(_weave, {"scratch": _scratch, "spot": _spot}, "RGB", ".png"),
    "tile": Category(_tile, {"crack": _crack, "stain": _stain}, "L", ".png"),
    "washer": Category(_washer, {"missing": _missing, "scratch": _ring_scratch}, "RGB", ".jpg"),
}


def _rng(seed: int, *parts: str | int) -> np.random.Generator:
    words = [int(seed)] + [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in parts]
    return np.random.default_rng(words)


def make_example(
    category: str, defect_type: str, *, rng: np.random.Generator, size: int = 128
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(good image, image with the defect, mask) as uint8 ``H×W×C`` / ``H×W``.

    ``defect_type='good'`` returns the good image twice and an empty mask.
    Defects are redrawn (up to 100 times) until they cover 1–8% of the image.
    """
    spec = CATEGORIES[category]
    scene = spec.render(rng, size)
    good = _to_uint8(scene.image)
    if defect_type == "good":
        return good, good, np.zeros((size, size), np.uint8)
    draw = spec.defects[defect_type]
    for _ in range(_MAX_DRAWS):
        edited, mask = draw(rng, scene)
        if _COVERAGE[0] <= mask.mean() <= _COVERAGE[1]:
            break
    return good, _to_uint8(edited), mask.astype(np.uint8)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _save(array: np.ndarray, path: Path, *, mode: str) -> None:
    image = Image.fromarray(array[..., 0] if array.ndim == 3 and mode == "L" else array, mode=mode)
    if path.suffix == ".jpg":
        image.save(path, quality=95)
    else:
        image.save(path)


def _defect_counts(n: int, types: Sequence[str]) -> dict[str, int]:
    return {t: n // len(types) + (i < n % len(types)) for i, t in enumerate(types)}


def _write_category(
    root: Path, name: str, *, seed: int, n_train: int, n_test_good: int, n_test_defect: int, size: int
) -> None:
    spec = CATEGORIES[name]
    jobs = [("train", "good", i) for i in range(n_train)]
    jobs += [("test", "good", i) for i in range(n_test_good)]
    for defect, count in _defect_counts(n_test_defect, list(spec.defects)).items():
        jobs += [("test", defect, i) for i in range(count)]
    for split, kind, i in jobs:
        _, image, mask = make_example(name, kind, rng=_rng(seed, name, split, kind, i), size=size)
        folder = root / name / split / kind
        folder.mkdir(parents=True, exist_ok=True)
        _save(image, folder / f"{i:03d}{spec.suffix}", mode=spec.mode)
        if kind != "good":
            masks = root / name / "ground_truth" / kind
            masks.mkdir(parents=True, exist_ok=True)
            _save(mask * np.uint8(255), masks / f"{i:03d}_mask.png", mode="L")


def write_demo_dataset(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    categories: Sequence[str] = ("weave", "tile", "washer"),
    n_train: int = 60,
    n_test_good: int = 20,
    n_test_defect: int = 30,
    size: int = 128,
    log: Callable[[str], None] | None = None,
) -> str:
    """Writes the demo dataset under ``out_dir`` (its root) and returns that path.

    Same arguments → byte-identical files. A complete earlier run with the same
    arguments (recorded in a marker file) is reused; otherwise the category
    folders are replaced, so ``out_dir`` should be dedicated to the demo.
    ``log`` is told when the files are generated (it takes seconds).
    """
    unknown = sorted(set(categories) - set(CATEGORIES))
    if unknown:
        raise ValueError(f"unknown demo categories {unknown}; choose from {sorted(CATEGORIES)}")
    root = Path(out_dir)
    params = dict(
        version=_FORMAT_VERSION,
        seed=int(seed),
        categories=list(categories),
        n_train=n_train,
        n_test_good=n_test_good,
        n_test_defect=n_test_defect,
        size=size,
    )
    marker = root / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return os.fspath(root)
    if log is not None:
        count = len(categories) * (n_train + n_test_good + n_test_defect)
        log(f"generating the demo data ({len(categories)} categories, {count} images) into {root}")
    root.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    for name in categories:
        shutil.rmtree(root / name, ignore_errors=True)
        _write_category(
            root,
            name,
            seed=int(seed),
            n_train=n_train,
            n_test_good=n_test_good,
            n_test_defect=n_test_defect,
            size=size,
        )
    marker.write_text(json.dumps(params, indent=1))
    return os.fspath(root)
