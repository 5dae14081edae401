"""sla_jax: self-supervised defect inspection with soft label assignment, in JAX/Flax."""

from sla_jax.common import runtime as _runtime

_runtime.apply_cpu_defaults()
