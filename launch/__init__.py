"""Sweeps of sla_jax training runs across processes and machines (``python -m launch.sweep``,
``python -m launch.collect``); see launch/README.md."""
