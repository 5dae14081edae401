"""Process-wide XLA settings that make the CPU path fast, applied when ``sla_jax`` is first imported.

XLA reads ``XLA_FLAGS`` once, when its first backend starts, so these go into the environment before
any JAX computation runs; a flag the user set already is left as given.

- ``--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE``: XLA:CPU
  hands matrix products (with their fused operands) and reductions to YNNPACK, but not convolutions:
  without the flag, jaxlib 0.10.2 compiles ResNet-18's convolutions into YNNPACK fusions, whose
  gradients ran 1.5-2.5× slower than XLA's own (Eigen) convolutions on ResNet-18's layers at 64-256 px
  (``bench/conv_layers.py``); the whole training step ran 1.3-1.5× faster with the flag
  (``bench/train_step.py``, variants ``jax`` and ``jax-xla-defaults``). ``LIBRARY_FUSION_TYPE_ELTWISE``
  is left out on purpose: with it, jaxlib 0.10.2 fails to run the GDE's Mahalanobis distance
  ("Instruction with unsupported layout in YNN fusion"); ``tests/test_runtime.py`` runs that program.

``SLA_JAX_XLA_CPU_DEFAULTS=0`` in the environment turns this off. Every choice that only pays on a CPU
(these flags, im2col for convolutions on tiny maps) comes from :func:`platform_defaults`; on a GPU or TPU
the flags are not set and ``model.conv_impl=auto`` is XLA's convolution (cuDNN on NVIDIA GPUs).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess

CPU_FLAGS = {"--xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE"}


def with_cpu_defaults(xla_flags: str) -> str:
    """``xla_flags`` plus each of :data:`CPU_FLAGS` that it does not set already."""
    given = {part.split("=", 1)[0] for part in xla_flags.split()}
    extra = [f"{name}={value}" for name, value in CPU_FLAGS.items() if name not in given]
    return " ".join([xla_flags.strip(), *extra]).strip()


@dataclasses.dataclass(frozen=True)
class PlatformDefaults:
    """What sla_jax chooses for a backend platform: XLA flags, and the convolution of ``conv_impl=auto``
    for a k > 1 kernel whose output has at most ``IM2COL_MAX_PIXELS`` pixels (larger maps: XLA's)."""

    xla_flags: dict
    small_map_conv: str  # "im2col" | "xla"


IM2COL_MAX_PIXELS = 16


def platform_defaults(platform: str) -> PlatformDefaults:
    """The defaults for ``platform`` (``jax.default_backend()``: cpu, gpu/cuda/rocm, tpu): the XLA CPU flags
    and im2col on tiny maps only pay on a CPU (XLA:CPU's direct convolution is slow there, cuDNN is not)."""
    if platform == "cpu":
        return PlatformDefaults(xla_flags=dict(CPU_FLAGS), small_map_conv="im2col")
    return PlatformDefaults(xla_flags={}, small_map_conv="xla")


def expected_platform(environ=os.environ) -> str:
    """The platform JAX will pick, told before it starts (XLA reads ``XLA_FLAGS`` once, at that start): the
    first of ``JAX_PLATFORMS`` when set, else gpu when a CUDA or ROCm plugin is installed, tpu when libtpu
    is, cpu otherwise."""
    chosen = environ.get("JAX_PLATFORMS", "").split(",")[0].strip().lower()
    if chosen:
        return "gpu" if chosen in ("cuda", "rocm", "gpu") else chosen
    plugins = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin")
    if any(importlib.util.find_spec(name) is not None for name in plugins):
        return "gpu"
    return "tpu" if importlib.util.find_spec("libtpu") is not None else "cpu"


def apply_cpu_defaults(environ=os.environ) -> None:
    """Add the CPU's XLA flags (:func:`platform_defaults`) to ``XLA_FLAGS`` when JAX will run on the CPU
    (unless ``SLA_JAX_XLA_CPU_DEFAULTS=0``)."""
    if environ.get("SLA_JAX_XLA_CPU_DEFAULTS", "1") != "0" and expected_platform(environ) == "cpu":
        environ["XLA_FLAGS"] = with_cpu_defaults(environ.get("XLA_FLAGS", ""))


DEFAULT_COMPILATION_CACHE = "~/.cache/sla_jax/xla"


def enable_compilation_cache(environ=os.environ) -> str | None:
    """Turn on JAX's persistent compilation cache, so that a second run of the same command (a resumed
    run, the next point of a sweep, ``sla_jax.predict`` after training) loads its compiled programs
    instead of compiling them again. The folder is ``SLA_JAX_COMPILATION_CACHE`` (default
    ``~/.cache/sla_jax/xla``; ``0`` turns the cache off); programs that compiled in under a second are
    not stored (JAX's default). Returns the folder, or None. Called by the command-line entry points."""
    import jax

    setting = environ.get("SLA_JAX_COMPILATION_CACHE", DEFAULT_COMPILATION_CACHE)
    if setting == "0":
        return None
    path = os.path.abspath(os.path.expanduser(setting))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None  # an unwritable cache only costs compile time
    jax.config.update("jax_compilation_cache_dir", path)
    return path


def source_commit() -> str:
    """The commit of the sla_jax checkout this runs from, with ``+changes`` when tracked files differ from
    it; ``unknown`` outside a git checkout (an installed wheel)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+changes" if dirty else "")
