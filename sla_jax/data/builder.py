"""The tensorflow-datasets builder for MVTec AD and any folder in its layout, prepared once into a cache.

It stores the original encoded file bytes in ``array_record`` files (no TensorFlow needed to write or
read them); :func:`sla_jax.data.load_split` reads them back through ``as_data_source()`` and decodes with
PIL, so every image mode is handled the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from sla_jax.common.errors import DataError
from sla_jax.common.workdir import write_probe
from sla_jax.data import layouts
from sla_jax.data.scan import Entry, Scan, fingerprint

MVTEC_CATEGORIES = (
    "bottle",
    "cable",
    "capsule",
    "carpet",
    "grid",
    "hazelnut",
    "leather",
    "metal_nut",
    "pill",
    "screw",
    "tile",
    "toothbrush",
    "transistor",
    "wood",
    "zipper",
)
DEFAULT_CACHE_DIR = "~/.cache/sla_jax/tfds"


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
    BUILDER_CONFIGS = [MVTecConfig(name=c, category=c, description=f"MVTec AD category {c}.") for c in MVTEC_CATEGORIES]
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
        self,
        *,
        require_masks: bool = True,
        skip_bad_files: bool = False,
        layout: str = "mvtec",
        test_fraction: float = 0.2,
        **kwargs,
    ):
        self._require_masks = require_masks
        self._skip_bad_files = skip_bad_files
        self._layout = layout
        self._test_fraction = test_fraction
        super().__init__(**kwargs)

    def _log_download_bytes(self) -> None:
        """Said instead of TFDS's "Downloading and preparing dataset Unknown size": nothing is downloaded."""
        print(
            f"preparing {self.builder_config.name} once from the local folder (reused while its files do not "
            f"change) into {self.data_dir}",
            flush=True,
        )

    def _log_download_done(self) -> None:
        print(f"prepared {self.builder_config.name}", flush=True)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Defect-free training images and good/defective test images "
                "with pixel masks, stored as the original file bytes."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(), dtype=np.object_),
                    "mask": tfds.features.Tensor(shape=(), dtype=np.object_),
                    "label": tfds.features.ClassLabel(names=["good", "defective"]),
                    "defect_type": tfds.features.Text(),
                    "path": tfds.features.Text(),
                }
            ),
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
        scan = layouts.scan(
            root,
            category=category,
            layout=self._layout,
            require_masks=self._require_masks,
            skip_bad_files=self._skip_bad_files,
            test_fraction=self._test_fraction,
        )
        return {split: self._generate_examples(root / category, items) for split, items in scan.splits.items()}

    def _generate_examples(self, folder: Path, entries: Sequence[Entry]):
        for entry in entries:
            # Names as the file system's bytes: any name it allows, UTF-8 or not, is stored and read back.
            yield (
                os.fsencode(entry.image),
                {
                    "image": (folder / entry.image).read_bytes(),
                    "mask": (folder / entry.mask).read_bytes() if entry.mask else b"",
                    "label": entry.label,
                    "defect_type": os.fsencode(entry.defect_type),
                    "path": os.fsencode(entry.image),
                },
            )


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


def _check_cache_writable(cache: Path, data_dir: Path) -> None:
    """The folder the category is prepared into can be made and written, or a DataError naming
    ``data.cache_dir`` (TFDS's own error would be a traceback from deep inside it)."""
    try:
        write_probe(data_dir)
    except OSError as error:
        raise DataError(
            f"cannot write the prepared-data cache {cache} ({error.strerror or error}): set "
            "--config.data.cache_dir to a writable folder (default ~/.cache/sla_jax/tfds)",
            path=cache,
        ) from None


def prepare(
    root: str | os.PathLike,
    *,
    category: str,
    cache_dir: str | os.PathLike | None = None,
    require_masks: bool = True,
    skip_bad_files: bool = False,
    layout: str = "mvtec",
    test_fraction: float = 0.2,
) -> MVTecAD:
    """Prepares (or reuses) one category under ``cache_dir``; returns the builder.

    The prepared copy sits in a folder keyed by the resolved root path and a
    fingerprint of the category's files, so an edited folder is prepared
    again and an unchanged one is reused.
    """
    return prepare_with_scan(
        root,
        category=category,
        cache_dir=cache_dir,
        require_masks=require_masks,
        skip_bad_files=skip_bad_files,
        layout=layout,
        test_fraction=test_fraction,
    )[0]


def prepare_with_scan(
    root: str | os.PathLike,
    *,
    category: str,
    cache_dir: str | os.PathLike | None = None,
    require_masks: bool = True,
    skip_bad_files: bool = False,
    layout: str = "mvtec",
    test_fraction: float = 0.2,
) -> tuple[MVTecAD, Scan]:
    """:func:`prepare`, also returning the scan of the folder."""
    root = Path(root).expanduser().resolve()
    cache = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser().resolve()
    scan = layouts.scan(
        root,
        category=category,
        layout=layout,
        require_masks=require_masks,
        skip_bad_files=skip_bad_files,
        test_fraction=test_fraction,
    )
    key = fingerprint(root / category, scan.splits)[:16]
    data_dir = _prepared_dir(cache, root, category, key)
    if not data_dir.is_dir():
        _check_cache_writable(cache, data_dir)
    with _quiet_custom_config():
        builder = MVTecAD(
            config=category_config(category),
            data_dir=os.fspath(data_dir),
            file_format="array_record",
            require_masks=require_masks,
            skip_bad_files=skip_bad_files,
            layout=layout,
            test_fraction=test_fraction,
        )
    tfds.disable_progress_bar()
    builder.download_and_prepare(
        download_dir=os.fspath(data_dir / "downloads"),
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(root)),
    )
    _remove_stale(data_dir, category)
    return builder, scan
