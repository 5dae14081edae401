"""Test session setup: four fake CPU devices so the sharded code path runs everywhere."""

import os
from pathlib import Path

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

import sla_jax  # noqa: E402,F401  (its XLA CPU flags join XLA_FLAGS before JAX starts, as in every run)
from sla_jax.common import runtime  # noqa: E402

# In-process runs share compiled programs through JAX's persistent cache, as the command lines do
# (SLA_JAX_COMPILATION_CACHE=0 turns it off).
runtime.enable_compilation_cache()

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (real MVTec-layout datasets), or skip."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present (the real datasets live beside the checkout)")
    return SHARED_DATA
