"""Dataset layouts, chosen by ``data.layout``: how a category's folder names its training images, test images
and masks. Each layout scans the folder into the same :class:`~sla_jax.data.scan.Scan` (paths relative to
the category folder), so preparing, decoding and loading do not depend on it; a new layout is one entry in
:data:`LAYOUTS`.

- ``mvtec``: ``CATEGORY/train/good/``, ``CATEGORY/test/<good|defect type>/``,
  ``CATEGORY/ground_truth/<defect type>/<stem>_mask.png`` (MVTec AD's own).
- ``folders``: ``CATEGORY/good/`` (every defect-free image), one folder per defect type
  ``CATEGORY/<defect type>/``, optional masks ``CATEGORY/masks/[<defect type>/]<stem>_mask.png`` (or
  ``<stem>.png``). A share ``data.test_fraction`` of the good images, chosen by a hash of the file name (so
  adding images moves none of the others), is held out for the test split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from sla_jax.common.errors import DataError
from sla_jax.common.settings import Section, choice, setting
from sla_jax.data.decode import RESAMPLING
from sla_jax.data.scan import Entry, Scan, _category_dir, _image_files, _subfolders, scan_category

MASKS = "masks"


@dataclasses.dataclass(frozen=True)
class DataSettings(Section):
    """``config.data``: where the images are, in which layout, and how they are read."""

    SECTION = "data"
    root: str = setting("", "folder holding CATEGORY/ in data.layout (MVTec AD itself, or your own)")
    layout: str = setting("mvtec", "mvtec (train/good, test/TYPE, ground_truth/TYPE) | folders (good/, TYPE/, masks/)")
    test_fraction: float = setting(0.2, "layout folders: share of the good images held out for testing (by file name)")
    category: str = setting("", 'sub-folder of root, e.g. "bottle"')
    demo: bool = setting(False, "generate the embedded demo dataset into WORKDIR/demo_data and use it")
    image_size: int = setting(256)
    resize: str = setting(
        "bilinear", "PIL's antialiased filter to data.image_size: bilinear | bicubic (the PyTorch ports)"
    )
    require_masks: bool = setting(True, "False: image-level only, defect types may lack ground_truth/")
    skip_bad_files: bool = setting(False, "True: unreadable/mismatched files are left out (listed in results.json)")
    cache_dir: str = setting("", 'prepared TFDS records; "" = ~/.cache/sla_jax/tfds')

    def check(self) -> None:
        if not self.demo and not (self.root and self.category):
            raise ValueError(
                "no dataset given: set --config.data.root=/path/to/mvtec_anomaly_detection (or any folder in MVTec "
                "AD layout) and --config.data.category=bottle (a sub-folder of root), or train on the embedded "
                "demo data with --config=configs/demo.py"
            )
        if self.demo and not self.category:
            raise ValueError("config.data.category is empty: the demo data has categories weave, tile, washer")
        choice("data.resize", self.resize, tuple(RESAMPLING))
        choice("data.layout", self.layout, tuple(LAYOUTS))
        if self.demo and self.layout != "mvtec" and not self.root:
            raise ValueError("config.data.demo=True writes the demo data in the MVTec layout: set data.layout='mvtec'")
        if not 0 < self.test_fraction < 1:
            raise ValueError(
                f"config.data.test_fraction={self.test_fraction} must lie in (0, 1): the share of the good "
                "images held out for testing (data.layout='folders')"
            )
        if self.image_size < 32:
            raise ValueError(f"config.data.image_size={self.image_size} must be >= 32")


def skipped_with_test(scan_: Scan, *, split: str, folder: Path) -> list[str]:
    """Every file left out, listed with the test split (so each is named once): a layout whose folders do
    not tell the splits apart."""
    del folder
    return list(scan_.skipped) if split == "test" else []


def _skipped_by_folder(scan_: Scan, *, split: str, folder: Path) -> list[str]:
    """The MVTec layout's files left out of ``split``: those in its folder (and, for test, its masks)."""
    prefix = os.fspath(folder / split) + os.sep
    skipped = [s for s in scan_.skipped if s.startswith(prefix)]
    if split == "test":
        skipped += [s for s in scan_.skipped if s.startswith(os.fspath(folder / "ground_truth"))]
    return skipped


class Layout(NamedTuple):
    """A registered layout: its scan, where its defect-free training images are (for messages), and which
    of the files it left out belong to a split."""

    scan: Callable[..., Scan]  # (root, *, category, require_masks, skip_bad_files, test_fraction) -> Scan
    good: str  # the folder of defect-free images, relative to the category folder
    skipped_in: Callable[..., list[str]] = skipped_with_test  # (scan, *, split, folder) -> files left out


def _scan_mvtec(root, *, category: str, require_masks: bool, skip_bad_files: bool, test_fraction: float) -> Scan:
    del test_fraction  # MVTec AD names its own test split
    return scan_category(root, category=category, require_masks=require_masks, skip_bad_files=skip_bad_files)


def held_out(name: str, *, fraction: float) -> bool:
    """Whether the good image named ``name`` belongs to the test split: a hash of the name below ``fraction``."""
    digest = hashlib.sha256(os.fsencode(name)).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _mask_of(image: Path, masks: Path, *, defect_type: str) -> Path | None:
    for folder in (masks / defect_type, masks):
        for name in (f"{image.stem}_mask.png", f"{image.stem}.png"):
            if (folder / name).is_file():
                return folder / name
    return None


def scan_folders(
    root, *, category: str, require_masks: bool = True, skip_bad_files: bool = False, test_fraction: float = 0.2
) -> Scan:
    """The ``folders`` layout (module docstring): good images split into train and test by name, defect
    folders as test images with their masks."""
    folder = _category_dir(Path(root), category)
    skipped: list[str] | None = [] if skip_bad_files else None
    good = folder / "good"
    files = _image_files(good, skipped) if good.is_dir() else []
    if not files:
        state = "is empty" if good.is_dir() else "does not exist"
        raise DataError(
            f"Folder of good images {good} {state}. With data.layout='folders' put every defect-free image "
            "there and each defect type's images in a folder of its own beside it."
        )
    test_good = [p for p in files if held_out(p.name, fraction=test_fraction)]
    train = [p for p in files if p not in test_good]
    if not train:
        raise DataError(
            f"All {len(files)} good image(s) in {good} fell into the test share (data.test_fraction="
            f"{test_fraction}): lower data.test_fraction or add good images."
        )
    masks = folder / MASKS
    tests = [Entry(f"good/{p.name}", "", 0, "good") for p in test_good]
    for sub in _subfolders(folder):
        if sub.name in ("good", MASKS):
            continue
        for image in _image_files(sub, skipped):
            mask = _mask_of(image, masks, defect_type=sub.name)
            if mask is None and require_masks:
                raise DataError(
                    f"Mask file for image {image} is missing: put it in {masks / sub.name} or {masks} as "
                    f"{image.stem}_mask.png (8-bit PNG, 255 = defect), or set --config.data.require_masks=False "
                    "to evaluate image-level only."
                )
            tests.append(
                Entry(f"{sub.name}/{image.name}", mask.relative_to(folder).as_posix() if mask else "", 1, sub.name)
            )
    return Scan(
        {"train": tuple(Entry(f"good/{p.name}", "", 0, "good") for p in train), "test": tuple(tests)},
        tuple(skipped or ()),
    )


LAYOUTS: dict[str, Layout] = {
    "mvtec": Layout(_scan_mvtec, good="train/good", skipped_in=_skipped_by_folder),
    "folders": Layout(scan_folders, good="good"),
}


def register(name: str, layout: Layout) -> None:
    """Make ``data.layout=name`` read folders with ``layout`` (an entry here is all a new layout needs)."""
    LAYOUTS[name] = layout


def scan(
    root,
    *,
    category: str,
    layout: str = "mvtec",
    require_masks: bool = True,
    skip_bad_files: bool = False,
    test_fraction: float = 0.2,
) -> Scan:
    """The category's images per split under the registered ``layout``."""
    if layout not in LAYOUTS:
        raise DataError(f"data.layout={layout!r} is not a known layout; choose one of {tuple(LAYOUTS)}")
    return LAYOUTS[layout].scan(
        root,
        category=category,
        require_masks=require_masks,
        skip_bad_files=skip_bad_files,
        test_fraction=test_fraction,
    )


def skipped_in(scan_: Scan, *, split: str, folder: Path, layout: str) -> list[str]:
    """The files the registered ``layout`` left out of ``split``."""
    return LAYOUTS[layout].skipped_in(scan_, split=split, folder=folder)
