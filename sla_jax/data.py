"""Datasets in the MVTec AD folder layout, prepared with tensorflow-datasets.

Layout: ``ROOT/CATEGORY/train/good/*``, ``ROOT/CATEGORY/test/<good|defect>/*``,
``ROOT/CATEGORY/ground_truth/<defect>/<image stem>_mask.png``.

One builder, :class:`MVTecAD`, serves MVTec AD itself and any other folder in
that layout. It stores the original encoded file bytes in ``array_record``
files (no TensorFlow needed to write or read them); :func:`load_split` reads
them back through ``as_data_source()`` and decodes with PIL, so every image
mode is handled the same way.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import io
import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageOps, UnidentifiedImageError

MVTEC_CATEGORIES = (
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather",
    "metal_nut", "pill", "screw", "tile", "toothbrush", "transistor", "wood",
    "zipper",
)
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
SPLITS = ("train", "test")
DEFAULT_CACHE_DIR = "~/.cache/sla_jax/tfds"
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})


class DataError(ValueError):
    """A dataset folder or file that cannot be used as it is; says what to fix.

    ``path`` is the offending file, where there is one.
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None):
        super().__init__(message)
        self.path = os.fspath(path) if path is not None else None


class Split(NamedTuple):
    """One split of one category, decoded and resized to ``S×S``."""

    images: np.ndarray  # N×S×S×3 uint8
    masks: np.ndarray  # N×S×S uint8 in {0, 1}
    labels: np.ndarray  # (N,) int32, 0 good, 1 defective
    defect_types: tuple[str, ...]
    paths: tuple[str, ...]
    skipped: tuple[str, ...] = ()  # "path: reason" of files left out (``skip_bad_files``)
    nonbinary_masks: tuple[str, ...] = ()  # masks with more than two levels, thresholded at 128


class Scan(NamedTuple):
    """The usable images of one category per split, and the files left out."""

    splits: dict[str, tuple[Entry, ...]]
    skipped: tuple[str, ...]


class Entry(NamedTuple):
    """One image of a category: paths relative to the category folder."""

    image: str
    mask: str  # '' when the image has no mask
    label: int
    defect_type: str


# --------------------------------------------------------------------------
# Scanning the folder


SKIP_HINT = (
    "or set --config.data.skip_bad_files=True to leave such files out (they are "
    "listed in results.json)"
)


def is_image_name(path: Path) -> bool:
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def _unusable(path: Path) -> str:
    """Why an image-named entry cannot be read as an image file ('' when it can)."""
    try:
        info = path.stat()
    except OSError as error:
        kind = "a symbolic link loop" if path.is_symlink() else "unreadable"
        return f"{kind} ({error.strerror})"
    if not path.is_file():
        return "not a regular file"
    if info.st_size == 0:
        return "empty (0 bytes)"
    return ""


def _image_files(folder: Path, skipped: list[str] | None = None) -> list[Path]:
    """Image files of ``folder``, sorted. Hidden and non-image names are ignored;
    an image name that is a broken link, a link loop or an empty file raises a
    DataError, or is appended to ``skipped`` when that list is given."""
    files = []
    for path in sorted(p for p in folder.iterdir() if is_image_name(p)):
        problem = _unusable(path)
        if not problem:
            files.append(path)
        elif skipped is not None:
            skipped.append(f"{path}: {problem}")
        elif problem != "not a regular file":
            raise DataError(
                f"Image file {path} is {problem}. Replace or remove it, {SKIP_HINT}."
            )
    return files


def _subfolders(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
    )


def _category_dir(root: Path, category: str) -> Path:
    if not root.is_dir():
        raise DataError(
            f"Dataset root folder {root} does not exist. Pass the folder that "
            "holds the category folders (ROOT/CATEGORY/train/good/...)."
        )
    folder = root / category
    if not folder.is_dir():
        found = ", ".join(p.name for p in _subfolders(root)) or "none"
        raise DataError(
            f"Category folder {folder} does not exist (categories found in "
            f"{root}: {found}). Check the category name and the root folder."
        )
    return folder


def _train_entries(folder: Path, skipped: list[str] | None) -> tuple[Entry, ...]:
    good = folder / "train" / "good"
    files = _image_files(good, skipped) if good.is_dir() else []
    if not files:
        state = "is empty" if good.is_dir() else "does not exist"
        raise DataError(
            f"Training folder {good} {state}. Put the defect-free training "
            f"images there (extensions {', '.join(sorted(IMAGE_SUFFIXES))})."
        )
    return tuple(Entry(f"train/good/{p.name}", "", 0, "good") for p in files)


def _mask_for(image: Path, gt_dir: Path, *, require_masks: bool) -> str:
    mask = gt_dir / f"{image.stem}_mask.png"
    if mask.is_file():
        return f"ground_truth/{gt_dir.name}/{mask.name}"
    if require_masks:
        raise DataError(
            f"Mask file {mask} for image {image} is missing. Add it (8-bit PNG, "
            "255 = defect) or set --config.data.require_masks=False to "
            "evaluate image-level only."
        )
    return ""


def _orphan_masks(gt_dir: Path, images: Sequence[Path]) -> list[Path]:
    stems = {p.stem for p in images}
    return [
        m for m in sorted(gt_dir.glob("*_mask.png"))
        if m.name[: -len("_mask.png")] not in stems
    ]


def _test_entries(
    folder: Path, *, require_masks: bool, skipped: list[str] | None
) -> tuple[Entry, ...]:
    test = folder / "test"
    if not test.is_dir():
        raise DataError(
            f"Test folder {test} does not exist. Put test images in "
            "test/good/ and test/<defect_type>/."
        )
    entries = []
    for sub in _subfolders(test):
        files = _image_files(sub, skipped)
        if sub.name == "good":
            entries += [Entry(f"test/good/{p.name}", "", 0, "good") for p in files]
            continue
        gt_dir = folder / "ground_truth" / sub.name
        orphans = _orphan_masks(gt_dir, files) if gt_dir.is_dir() else []
        if orphans and skipped is None:
            raise DataError(
                f"Mask file {orphans[0]} has no image {sub / orphans[0].name[:-9]}.* "
                f"({len(orphans)} such mask(s) in {gt_dir}). Masks are matched to "
                "images by name: <image stem>_mask.png. Rename or remove it, "
                f"{SKIP_HINT}."
            )
        if skipped is not None:
            skipped += [f"{m}: mask without an image" for m in orphans]
        if not gt_dir.is_dir() and require_masks and files:
            raise DataError(
                f"Defect type '{sub.name}' has no mask folder {gt_dir}. Add "
                f"masks as ground_truth/{sub.name}/<image stem>_mask.png, or set "
                "--config.data.require_masks=False to evaluate image-level only."
            )
        entries += [
            Entry(
                f"test/{sub.name}/{p.name}",
                _mask_for(p, gt_dir, require_masks=require_masks),
                1,
                sub.name,
            )
            for p in files
        ]
    if not entries:
        raise DataError(
            f"Test folder {test} holds no images. Put test images in "
            "test/good/ and test/<defect_type>/."
        )
    return tuple(entries)


def scan_category(
    root: str | os.PathLike,
    *,
    category: str,
    require_masks: bool = True,
    skip_bad_files: bool = False,
) -> Scan:
    """Lists the images of one category per split, sorted; raises DataError.

    Hidden files and non-image names (``Thumbs.db``, ``.DS_Store``) are ignored.
    Empty files, broken links, link loops and masks without an image raise,
    or with ``skip_bad_files`` are left out and listed in ``Scan.skipped``.
    """
    folder = _category_dir(Path(root), category)
    skipped: list[str] | None = [] if skip_bad_files else None
    splits = {
        "train": _train_entries(folder, skipped),
        "test": _test_entries(folder, require_masks=require_masks, skipped=skipped),
    }
    return Scan(splits, tuple(skipped or ()))


def fingerprint(folder: Path, entries: Mapping[str, Sequence[Entry]]) -> str:
    """A hash of file names, sizes and mtimes: changes when the folder does."""
    digest = hashlib.sha256()
    for split in sorted(entries):
        for entry in entries[split]:
            for rel in filter(None, (entry.image, entry.mask)):
                stat = (folder / rel).stat()
                digest.update(
                    f"{split}\0{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()
                )
    return digest.hexdigest()


# --------------------------------------------------------------------------
# The TFDS builder


@dataclasses.dataclass(eq=False)
class MVTecConfig(tfds.core.BuilderConfig):
    """One category; ``category`` is the folder name under the root."""

    category: str = ""


def _config_name(category: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", category) or "_"


class MVTecAD(tfds.core.GeneratorBasedBuilder):
    """MVTec AD, or any folder in its layout, as encoded bytes per image."""

    name = "mvtec_ad"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Encoded image and mask bytes, label, defect type, path."}
    BUILDER_CONFIGS = [
        MVTecConfig(name=c, category=c, description=f"MVTec AD category {c}.")
        for c in MVTEC_CATEGORIES
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download MVTec AD from https://www.mvtec.com/company/research/datasets/mvtec-ad
    and extract it. Pass the extracted folder (the one holding bottle/, cable/, ...)
    as the manual dir:
    `MVTecAD(config="bottle").download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=ROOT))`,
    or simply `sla_jax.data.load_split(ROOT, category="bottle", ...)`.
    Any folder in the same layout works the same way: its category gets a
    config from `category_config(name)`.
    """

    def __init__(
        self, *, require_masks: bool = True, skip_bad_files: bool = False, **kwargs
    ):
        self._require_masks = require_masks
        self._skip_bad_files = skip_bad_files
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Defect-free training images and good/defective test images "
                "with pixel masks, stored as the original file bytes."
            ),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(), dtype=np.object_),
                "mask": tfds.features.Tensor(shape=(), dtype=np.object_),
                "label": tfds.features.ClassLabel(names=["good", "defective"]),
                "defect_type": tfds.features.Text(),
                "path": tfds.features.Text(),
            }),
            disable_shuffling=True,
            homepage="https://www.mvtec.com/company/research/datasets/mvtec-ad",
            citation="""\
@inproceedings{bergmann2019mvtec,
  title={MVTec AD -- A Comprehensive Real-World Dataset for Unsupervised Anomaly Detection},
  author={Bergmann, Paul and Fauser, Michael and Sattlegger, David and Steger, Carsten},
  booktitle={CVPR},
  year={2019}
}""",
        )

    def _split_generators(self, dl_manager):
        root = Path(os.fspath(dl_manager.manual_dir))
        category = self.builder_config.category
        scan = scan_category(
            root,
            category=category,
            require_masks=self._require_masks,
            skip_bad_files=self._skip_bad_files,
        )
        return {
            split: self._generate_examples(root / category, items)
            for split, items in scan.splits.items()
        }

    def _generate_examples(self, folder: Path, entries: Sequence[Entry]):
        for entry in entries:
            yield entry.image, {
                "image": (folder / entry.image).read_bytes(),
                "mask": (folder / entry.mask).read_bytes() if entry.mask else b"",
                "label": entry.label,
                "defect_type": entry.defect_type,
                "path": entry.image,
            }


def category_config(category: str) -> MVTecConfig:
    """The predefined config of an MVTec AD category, else a new one for it."""
    predefined = MVTecAD.builder_configs.get(category)
    if predefined is not None:
        return predefined
    return MVTecConfig(
        name=_config_name(category),
        category=category,
        description=f"Category folder {category!r} in MVTec AD layout.",
    )


def _is_not_custom_config_notice(record: logging.LogRecord) -> bool:
    return "Using custom data configuration" not in record.getMessage()


@contextlib.contextmanager
def _quiet_custom_config():
    """Silences TFDS's warning for configs made by :func:`category_config`."""
    logger = logging.getLogger("absl")
    logger.addFilter(_is_not_custom_config_notice)
    try:
        yield
    finally:
        logger.removeFilter(_is_not_custom_config_notice)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:64] or "_"


def _prepared_dir(cache_dir: Path, root: Path, category: str, key: str) -> Path:
    root_hash = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return cache_dir / f"{_slug(root.name)}-{root_hash}" / f"{_slug(category)}-{key}"


def _remove_stale(data_dir: Path, category: str) -> None:
    pattern = re.compile(re.escape(_slug(category)) + r"-[0-9a-f]{16}")
    for old in data_dir.parent.iterdir():
        if old != data_dir and old.is_dir() and pattern.fullmatch(old.name):
            shutil.rmtree(old, ignore_errors=True)


def prepare(
    root: str | os.PathLike,
    *,
    category: str,
    cache_dir: str | os.PathLike | None = None,
    require_masks: bool = True,
    skip_bad_files: bool = False,
) -> MVTecAD:
    """Prepares (or reuses) one category under ``cache_dir``; returns the builder.

    The prepared copy sits in a folder keyed by the resolved root path and a
    fingerprint of the category's files, so an edited folder is prepared
    again and an unchanged one is reused.
    """
    return _prepare(
        root,
        category=category,
        cache_dir=cache_dir,
        require_masks=require_masks,
        skip_bad_files=skip_bad_files,
    )[0]


def _prepare(
    root: str | os.PathLike,
    *,
    category: str,
    cache_dir: str | os.PathLike | None = None,
    require_masks: bool = True,
    skip_bad_files: bool = False,
) -> tuple[MVTecAD, Scan]:
    """:func:`prepare`, also returning the scan of the folder."""
    root = Path(root).expanduser().resolve()
    cache = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser().resolve()
    scan = scan_category(
        root,
        category=category,
        require_masks=require_masks,
        skip_bad_files=skip_bad_files,
    )
    key = fingerprint(root / category, scan.splits)[:16]
    data_dir = _prepared_dir(cache, root, category, key)
    with _quiet_custom_config():
        builder = MVTecAD(
            config=category_config(category),
            data_dir=os.fspath(data_dir),
            file_format="array_record",
            require_masks=require_masks,
            skip_bad_files=skip_bad_files,
        )
    tfds.disable_progress_bar()
    builder.download_and_prepare(
        download_dir=os.fspath(data_dir / "downloads"),
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(root)),
    )
    _remove_stale(data_dir, category)
    return builder, scan


# --------------------------------------------------------------------------
# Decoding


def _open(data: bytes, *, name: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as error:
        raise DataError(
            f"Image file {name} is too large to decode safely ({error}). "
            f"Downscale it, or remove it, {SKIP_HINT}.",
            path=name,
        ) from error
    except Exception as error:  # PIL raises many types for corrupt files
        if not data:
            reason = "empty file"
        elif isinstance(error, UnidentifiedImageError):
            reason = "not in an image format PIL can read"
        else:
            reason = f"{type(error).__name__}: {error}"
        raise DataError(
            f"Cannot decode image file {name} ({reason}). Replace or remove it, "
            f"{SKIP_HINT}.",
            path=name,
        ) from error


def _to_rgb(image: Image.Image, *, name: str) -> Image.Image:
    """8-bit RGB: gray replicated, alpha dropped, 16-bit scaled by its range."""
    try:
        if image.mode in _SIXTEEN_BIT_MODES:
            values = np.asarray(image).astype(np.float64) * (255.0 / 65535.0)
            gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
            return Image.fromarray(gray, mode="L").convert("RGB")
        if image.mode == "P":
            return image.convert("RGBA").convert("RGB")
        return image.convert("RGB")
    except Exception as error:
        raise DataError(
            f"Cannot convert image file {name} (mode {image.mode}) to RGB "
            f"({type(error).__name__}: {error}). Re-save it as 8-bit PNG or JPEG, "
            f"{SKIP_HINT}.",
            path=name,
        ) from error


def _resized_rgb(image: Image.Image, *, size: int, name: str) -> np.ndarray:
    rgb = _to_rgb(image, name=name)
    return np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR))


def decode_image(data: bytes, *, size: int, name: str = "<bytes>") -> np.ndarray:
    """Encoded image → ``size×size×3`` uint8, resized with antialiased bilinear.

    Any file PIL cannot read (empty, truncated, corrupt, over PIL's
    decompression-bomb limit) raises :class:`DataError` naming ``name``.
    """
    return _resized_rgb(_open(data, name=name), size=size, name=name)


def _binary_mask(image: Image.Image, *, size: int, name: str) -> tuple[np.ndarray, bool]:
    """(``size×size`` mask in {0, 1}, whether the file had more than two levels)."""
    values = np.asarray(_to_rgb(image, name=name)).max(axis=-1)
    if values.any() and values.max() <= 127:
        raise DataError(
            f"Mask file {name} has values up to {values.max()} only: a defect pixel "
            "must be > 127 (MVTec AD masks use 255), so this mask would mark nothing. "
            f"Re-save it with 255 = defect, {SKIP_HINT}.",
            path=name,
        )
    binary = (values > 127).astype(np.float32)
    resized = Image.fromarray(binary, mode="F").resize(
        (size, size), Image.Resampling.BILINEAR
    )
    levels = np.unique(values)
    nonbinary = len(levels) > 2 or (len(levels) == 2 and levels[0] != 0)
    return (np.asarray(resized) >= 0.5).astype(np.uint8), nonbinary


def decode_mask(data: bytes, *, size: int, name: str = "<bytes>") -> np.ndarray:
    """Encoded mask → ``size×size`` uint8 in {0, 1}; empty bytes → zeros.

    A pixel is defective where any colour channel exceeds 127; the resized
    mask is thresholded at 0.5 so it stays binary.
    """
    if not data:
        return np.zeros((size, size), np.uint8)
    return _binary_mask(_open(data, name=name), size=size, name=name)[0]


def _decode_record(record: Mapping, *, folder: Path, size: int):
    """(image, mask, mask had more than two levels) of one stored record."""
    path = folder / _text(record["path"])
    image = _open(record["image"], name=os.fspath(path))
    if not record["mask"]:
        return _resized_rgb(image, size=size, name=os.fspath(path)), np.zeros((size, size), np.uint8), False
    mask_name = os.fspath(folder / _mask_path(_text(record["path"])))
    mask = _open(record["mask"], name=mask_name)
    if mask.size != image.size:
        raise DataError(
            f"Mask file {mask_name} is {mask.size[0]}×{mask.size[1]} px but its image "
            f"{path} is {image.size[0]}×{image.size[1]} px. A mask must match its "
            f"image pixel for pixel: fix or remove the pair, {SKIP_HINT}.",
            path=mask_name,
        )
    binary, nonbinary = _binary_mask(mask, size=size, name=mask_name)
    return _resized_rgb(image, size=size, name=os.fspath(path)), binary, nonbinary


def _mask_path(image_path: str) -> str:
    """``test/<type>/<stem>.ext`` → ``ground_truth/<type>/<stem>_mask.png``."""
    _, defect_type, file_name = image_path.split("/")
    return f"ground_truth/{defect_type}/{Path(file_name).stem}_mask.png"


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


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
) -> Split:
    """Loads one split of one category as arrays, in sorted path order.

    Goes through the :class:`MVTecAD` builder (prepared once per folder
    state under ``cache_dir``) and ``as_data_source()``. With
    ``skip_bad_files`` every file that would raise a :class:`DataError` is
    left out with a warning and listed in ``Split.skipped``.
    """
    if split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}.")
    if int(image_size) < 1:
        raise DataError(f"image_size must be positive, got {image_size!r}.")
    size = int(image_size)
    builder, scan = _prepare(
        root,
        category=category,
        cache_dir=cache_dir,
        require_masks=require_masks,
        skip_bad_files=skip_bad_files,
    )
    source = builder.as_data_source(split=split)
    records = sorted(
        (source[i] for i in range(len(source))), key=lambda r: _text(r["path"])
    )
    folder = Path(root).expanduser().resolve() / category

    def decode(record):
        try:
            return _decode_record(record, folder=folder, size=size)
        except DataError as error:
            if not skip_bad_files:
                raise
            return error

    with concurrent.futures.ThreadPoolExecutor(_workers()) as pool:
        decoded = list(pool.map(decode, records))
    prefix = os.fspath(folder / split) + os.sep
    skipped = [s for s in scan.skipped if s.startswith(prefix)]
    if split == "test":
        skipped += [s for s in scan.skipped if s.startswith(os.fspath(folder / "ground_truth"))]
    skipped += [f"{d.path}: {d}" for d in decoded if isinstance(d, DataError)]
    for reason in skipped:
        logging.warning("skipped: %s", reason)
    kept = [(r, d) for r, d in zip(records, decoded) if not isinstance(d, DataError)]
    if not kept:
        raise DataError(
            f"No usable image left in the {split} split of {folder}: all "
            f"{len(records)} were skipped ({skipped[:3]}...)."
        )
    paths = tuple(os.fspath(folder / _text(r["path"])) for r, _ in kept)
    return Split(
        images=np.stack([d[0] for _, d in kept]).reshape(-1, size, size, 3),
        masks=np.stack([d[1] for _, d in kept]).reshape(-1, size, size),
        labels=np.asarray([int(r["label"]) for r, _ in kept], np.int32),
        defect_types=tuple(_text(r["defect_type"]) for r, _ in kept),
        paths=paths,
        skipped=tuple(skipped),
        nonbinary_masks=tuple(p for p, (_, d) in zip(paths, kept) if d[2]),
    )
