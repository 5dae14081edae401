import os
import subprocess
import sys

from sla_jax import runtime


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
    off = subprocess.run([sys.executable, "-c", show], env={**env, "SLA_JAX_XLA_CPU_DEFAULTS": "0"},
                         capture_output=True, text=True, check=True).stdout
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
    snippet = ("import jax, jax.numpy as jnp\nfrom sla_jax import runtime\n"
               "print(runtime.enable_compilation_cache())\n"
               "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)\n"
               "print(jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((64, 64))).sum())\n")
    env = {**os.environ, "SLA_JAX_COMPILATION_CACHE": str(tmp_path / "xla")}
    first = subprocess.run([sys.executable, "-c", snippet], env=env, capture_output=True, text=True, check=True)
    assert first.stdout.splitlines()[0] == str(tmp_path / "xla")
    entries = sorted(p.name for p in (tmp_path / "xla").iterdir())
    assert entries, "nothing was written to the compilation cache"
    subprocess.run([sys.executable, "-c", snippet], env=env, capture_output=True, text=True, check=True)
    assert sorted(p.name for p in (tmp_path / "xla").iterdir()) == entries
    off = subprocess.run([sys.executable, "-c", snippet], env={**env, "SLA_JAX_COMPILATION_CACHE": "0"},
                         capture_output=True, text=True, check=True)
    assert off.stdout.splitlines()[0] == "None"
