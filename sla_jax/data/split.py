"""Loading one split of one category as arrays, through the builder's prepared records."""

from __future__ import annotations

import concurrent.futures
import logging
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from sla_jax.common.errors import DataError
from sla_jax.data import layouts
from sla_jax.data.builder import prepare_with_scan
from sla_jax.data.decode import decode_record, text
from sla_jax.outputs.atomic import printable

SPLITS = ("train", "test")


class Split(NamedTuple):
    """One split of one category, decoded and resized to ``S×S``."""

    images: np.ndarray  # N×S×S×3 uint8
    masks: np.ndarray  # N×S×S uint8 in {0, 1}
    labels: np.ndarray  # (N,) int32, 0 good, 1 defective
    defect_types: tuple[str, ...]
    paths: tuple[str, ...]
    skipped: tuple[str, ...] = ()  # "path: reason" of files left out (``skip_bad_files``)
    nonbinary_masks: tuple[str, ...] = ()  # masks with more than two levels, thresholded at 128


def _workers() -> int:
    return min(16, (os.cpu_count() or 1) + 2)


def load_split(
    root: str | os.PathLike,
    *,
    category: str,
    split: str,
    image_size: int,
    cache_dir: str | os.PathLike | None = None,
    require_masks: bool = True,
    skip_bad_files: bool = False,
    resample: str = "bilinear",
    layout: str = "mvtec",
    test_fraction: float = 0.2,
) -> Split:
    """Loads one split of one category as arrays, in sorted path order.

    Goes through the :class:`MVTecAD` builder (prepared once per folder
    state under ``cache_dir``) and ``as_data_source()``. With
    ``skip_bad_files`` every file that would raise a :class:`DataError` is
    left out with a warning and listed in ``Split.skipped``. Images are resized with ``resample``
    (``bilinear`` or ``bicubic``); masks always bilinearly, then thresholded.
    """
    if split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}.")
    if int(image_size) < 1:
        raise DataError(f"image_size must be positive, got {image_size!r}.")
    size = int(image_size)
    builder, scan = prepare_with_scan(
        root,
        category=category,
        cache_dir=cache_dir,
        require_masks=require_masks,
        skip_bad_files=skip_bad_files,
        layout=layout,
        test_fraction=test_fraction,
    )
    source = builder.as_data_source(split=split)
    records = sorted((source[i] for i in range(len(source))), key=lambda r: text(r["path"]))
    folder = Path(root).expanduser().resolve() / category

    def decode(record):
        try:
            return decode_record(record, folder=folder, size=size, resample=resample)
        except DataError as error:
            if not skip_bad_files:
                raise
            return error

    with concurrent.futures.ThreadPoolExecutor(_workers()) as pool:
        decoded = list(pool.map(decode, records))
    skipped = layouts.skipped_in(scan, split=split, folder=folder, layout=layout)
    skipped += [f"{d.path}: {d}" for d in decoded if isinstance(d, DataError)]
    for reason in skipped:
        logging.warning("skipped: %s", reason)
    kept = [(r, d) for r, d in zip(records, decoded) if not isinstance(d, DataError)]
    if not kept:
        raise DataError(
            f"No usable image left in the {split} split of {folder}: all "
            f"{len(records)} were skipped ({skipped[:3]}...)."
        )
    paths = tuple(os.fspath(folder / text(r["path"])) for r, _ in kept)
    return Split(
        images=np.stack([d[0] for _, d in kept]).reshape(-1, size, size, 3),
        masks=np.stack([d[1] for _, d in kept]).reshape(-1, size, size),
        labels=np.asarray([int(r["label"]) for r, _ in kept], np.int32),
        defect_types=tuple(printable(text(r["defect_type"])) for r, _ in kept),
        paths=paths,
        skipped=tuple(skipped),
        nonbinary_masks=tuple(p for p, (_, d) in zip(paths, kept) if d[2]),
    )


class Dataset(NamedTuple):
    """The training and test splits of one category."""

    train: Split
    test: Split
    root: str
    category: str


def load_dataset(
    root: str | os.PathLike,
    *,
    category: str,
    image_size: int,
    cache_dir: str | os.PathLike | None = None,
    require_masks: bool = True,
    skip_bad_files: bool = False,
    resample: str = "bilinear",
    layout: str = "mvtec",
    test_fraction: float = 0.2,
) -> Dataset:
    """Both splits of ``ROOT/CATEGORY`` in the folder ``layout`` (see :func:`load_split`)."""
    options = dict(
        category=category,
        image_size=image_size,
        cache_dir=cache_dir,
        require_masks=require_masks,
        skip_bad_files=skip_bad_files,
        resample=resample,
        layout=layout,
        test_fraction=test_fraction,
    )
    return Dataset(
        load_split(root, split="train", **options), load_split(root, split="test", **options), os.fspath(root), category
    )
