"""Datasets in the MVTec AD folder layout: scanned (``scan``), prepared once with tensorflow-datasets
(``builder``), decoded with PIL (``decode``), loaded as arrays (``split``); ``synthetic`` is the demo data."""

from sla_jax.data.builder import DEFAULT_CACHE_DIR, MVTEC_CATEGORIES, MVTecAD, MVTecConfig, category_config, prepare
from sla_jax.data.decode import RESAMPLING, decode_image, decode_mask, read_image
from sla_jax.data.errors import SKIP_HINT, DataError
from sla_jax.data.scan import IMAGE_SUFFIXES, Entry, Scan, collect_files, fingerprint, is_image_name, scan_category
from sla_jax.data.split import SPLITS, Dataset, Split, load_dataset, load_split

__all__ = ["DEFAULT_CACHE_DIR", "MVTEC_CATEGORIES", "MVTecAD", "MVTecConfig", "category_config", "prepare",
           "RESAMPLING", "decode_image", "decode_mask", "read_image", "SKIP_HINT", "DataError", "IMAGE_SUFFIXES", "Entry", "Scan",
           "collect_files", "fingerprint", "is_image_name", "scan_category", "SPLITS", "Dataset", "Split",
           "load_dataset", "load_split"]
