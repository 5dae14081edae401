"""Datasets in a registered folder layout (``layouts``: MVTec AD's, or a folder of good images beside folders of
defective ones): scanned (``scan``), prepared once with tensorflow-datasets
(``builder``), decoded with PIL (``decode``), loaded as arrays (``split``); ``synthetic`` is the demo data.

Names load their module on first use, so ``sla_jax.data.decode`` and ``sla_jax.data.scan`` import without
tensorflow-datasets (the JAX-free ``sla_jax.run_onnx`` uses them).
"""

import importlib

from sla_jax.common.errors import SKIP_HINT, DataError

_HOMES = {
    "builder": ("DEFAULT_CACHE_DIR", "MVTEC_CATEGORIES", "MVTecAD", "MVTecConfig", "category_config", "prepare"),
    "decode": ("RESAMPLING", "decode_image", "decode_mask", "read_image"),
    "layouts": ("LAYOUTS", "Layout", "scan_folders"),
    "scan": ("IMAGE_SUFFIXES", "Entry", "Scan", "collect_files", "fingerprint", "is_image_name", "scan_category"),
    "split": ("SPLITS", "Dataset", "Split", "load_dataset", "load_split"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = ["SKIP_HINT", "DataError", *_MODULE_OF]


def __getattr__(name):
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"sla_jax.data.{_MODULE_OF[name]}"), name)
    raise AttributeError(f"module 'sla_jax.data' has no attribute {name!r}")
