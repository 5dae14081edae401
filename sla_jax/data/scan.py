"""Scanning a category folder in MVTec AD layout: which images and masks each split has, and what is unusable.

Layout: ``ROOT/CATEGORY/train/good/*``, ``ROOT/CATEGORY/test/<good|defect>/*``,
``ROOT/CATEGORY/ground_truth/<defect>/<image stem>_mask.png``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from sla_jax.common.errors import SKIP_HINT, DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})


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
            raise DataError(f"Image file {path} is {problem}. Replace or remove it, {SKIP_HINT}.")
    return files


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


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
    return [m for m in sorted(gt_dir.glob("*_mask.png")) if m.name[: -len("_mask.png")] not in stems]


def _test_entries(folder: Path, *, require_masks: bool, skipped: list[str] | None) -> tuple[Entry, ...]:
    test = folder / "test"
    if not test.is_dir():
        raise DataError(f"Test folder {test} does not exist. Put test images in test/good/ and test/<defect_type>/.")
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
        raise DataError(f"Test folder {test} holds no images. Put test images in test/good/ and test/<defect_type>/.")
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
                    f"{split}\0{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode("utf-8", "surrogateescape")
                )
    return digest.hexdigest()


def collect_files(paths: Sequence[str]) -> tuple[list[Path], list[dict]]:
    """Image files named or inside the named folders (recursively, sorted; hidden files and non-image
    names skipped), and an error record for each path that does not exist."""
    files, errors = [], []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files += sorted(
                p
                for p in path.rglob("*")
                if is_image_name(p)
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif path.exists():
            files.append(path)
        else:
            errors.append({"path": str(path), "error": "no such file or folder"})
    return files, errors
