import os
import subprocess
import sys

from sla_jax.common import runtime


def test_cpu_flags_added_once_and_user_flags_kept():
    flags = runtime.with_cpu_defaults("--xla_force_host_platform_device_count=4")
    assert flags.startswith("--xla_force_host_platform_device_count=4 ")
    assert all(f"{name}={value}" in flags for name, value in runtime.CPU_FLAGS.items())
    assert runtime.with_cpu_defaults(flags) == flags
    mine = "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT"
    assert runtime.with_cpu_defaults(mine) == mine


def test_importing_sla_jax_sets_the_flags_unless_turned_off():
    show = "import os, sla_jax; print(os.environ.get('XLA_FLAGS', ''))"
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "SLA_JAX_XLA_CPU_DEFAULTS")}
    on = subprocess.run([sys.executable, "-c", show], env=env, capture_output=True, text=True, check=True).stdout
    off = subprocess.run(
        [sys.executable, "-c", show],
        env={**env, "SLA_JAX_XLA_CPU_DEFAULTS": "0"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--xla_cpu_experimental_ynn_fusion_type=" in on and off.strip() == ""


def test_gde_program_runs_under_the_flags():
    """The flags are in force in this test process (sla_jax was imported before JAX started); the GDE's
    transposed-precision einsum is the program that a YNNPACK elementwise fusion could not run."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from sla_jax import density

    assert "--xla_cpu_experimental_ynn_fusion_type=" in os.environ["XLA_FLAGS"]
    x = jnp.asarray(np.random.default_rng(0).normal(size=(60, 512)).astype(np.float32))
    gaussian = jax.jit(density.fit_gaussian)(x)
    assert np.all(np.isfinite(np.asarray(jax.jit(density.mahalanobis)(gaussian, x[:7]))))


def test_compilation_cache_is_written_once_and_reused(tmp_path):
    """A second process compiling the same program loads it from the cache folder (no new entry)."""
    snippet = (
        "import jax, jax.numpy as jnp\nfrom sla_jax.common import runtime\n"
        "print(runtime.enable_compilation_cache())\n"
        "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)\n"
        "print(jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((64, 64))).sum())\n"
    )
    env = {**os.environ, "SLA_JAX_COMPILATION_CACHE": str(tmp_path / "xla")}
    first = subprocess.run([sys.executable, "-c", snippet], env=env, capture_output=True, text=True, check=True)
    assert first.stdout.splitlines()[0] == str(tmp_path / "xla")
    entries = sorted(p.name for p in (tmp_path / "xla").iterdir())
    assert entries, "nothing was written to the compilation cache"
    subprocess.run([sys.executable, "-c", snippet], env=env, capture_output=True, text=True, check=True)
    assert sorted(p.name for p in (tmp_path / "xla").iterdir()) == entries
    off = subprocess.run(
        [sys.executable, "-c", snippet],
        env={**env, "SLA_JAX_COMPILATION_CACHE": "0"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert off.stdout.splitlines()[0] == "None"


def test_platform_defaults_keep_cpu_choices_on_the_cpu():
    """The XLA CPU flags and im2col on tiny maps are the CPU's; a GPU or TPU gets neither (cuDNN convolutions)."""
    cpu = runtime.platform_defaults("cpu")
    assert cpu.xla_flags == runtime.CPU_FLAGS and cpu.small_map_conv == "im2col"
    for platform in ("gpu", "cuda", "rocm", "tpu"):
        other = runtime.platform_defaults(platform)
        assert other.xla_flags == {} and other.small_map_conv == "xla"


def test_flags_are_set_only_when_jax_will_run_on_the_cpu():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    for platforms, expected in (("cpu", True), ("cuda", False), ("tpu", False), ("gpu,cpu", False)):
        environ = {**env, "JAX_PLATFORMS": platforms}
        assert runtime.expected_platform(environ) == ("cpu" if expected else ("tpu" if platforms == "tpu" else "gpu"))
        runtime.apply_cpu_defaults(environ)
        assert ("--xla_cpu_experimental_ynn_fusion_type" in environ["XLA_FLAGS"]) is expected


def test_conv_auto_follows_the_platform(monkeypatch):
    """conv_impl=auto on a 2×2 map: im2col on the CPU, XLA's convolution (a conv in the program) elsewhere."""
    import jax
    import jax.numpy as jnp

    from sla_jax.training.models import Conv

    x = jnp.ones((1, 2, 2, 8))
    conv = Conv(4, 3, 1, 1, impl="auto")
    params = conv.init(jax.random.key(0), x)
    hlo_cpu = jax.jit(conv.apply).lower(params, x).as_text()
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    hlo_gpu = jax.jit(conv.apply).lower(params, x).as_text()
    assert "convolution" not in hlo_cpu and "convolution" in hlo_gpu


def test_cuda_extra_pins_the_project_jax():
    """pyproject's cuda extra asks for jax's CUDA 12 wheels at exactly the jax version the project pins."""
    import re
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    jax_pins = [d for d in project["dependencies"] if d.startswith("jax[")]
    # one jax per Python: jax[cpu]==0.10.2; python_version < '3.12' → jax[cuda12]==0.10.2; the same marker
    assert project["optional-dependencies"]["cuda"] == [d.replace("jax[cpu]", "jax[cuda12]") for d in jax_pins]
    assert len(jax_pins) == 2 and all(re.search(r"; python_version [<>]=? '3\.12'$", d) for d in jax_pins)
