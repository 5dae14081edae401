"""Soft label assignment (paper eq. 6–9), hard labels, and soft-target cross-entropy."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from sla_jax.common.settings import Section, choice, setting

LABEL_MODES = ("soft", "hard", "smooth")


@dataclasses.dataclass(frozen=True)
class LabelSettings(Section):
    """``config.labels``: how an edit's label is assigned (paper eq. 6-9)."""

    SECTION = "labels"
    mode: str = setting("soft", 'soft (SLA) | hard (the "w/o SLA" ablation) | smooth (SLA with tau)')
    alpha: float = setting(10.0)
    epsilon: float = setting(0.02)
    tau: float = setting(0.005, 'mode "smooth": sigmoid((Δ − ε)/τ) replaces 1{Δ > ε} (differentiable labels)')
    learn: tuple = setting((), '("alpha",), ("alpha", "epsilon"): train these jointly with the network')

    def check(self) -> None:
        choice("labels.mode", self.mode, LABEL_MODES)
        if not self.alpha >= 0:
            raise ValueError(f"config.labels.alpha={self.alpha} must be >= 0 (the paper uses 10)")
        if not 0 < self.epsilon < 3:
            raise ValueError(
                f"config.labels.epsilon={self.epsilon} must lie in (0, 3): Δ sums 3 channels "
                "of [0, 1] values (the paper uses 0.02)"
            )
        if self.mode == "smooth" and not self.tau > 0:
            raise ValueError(
                f"config.labels.tau={self.tau} must be > 0 for labels.mode='smooth' "
                "(e.g. 0.005; smaller is closer to the paper's step)"
            )
        for name in self.learn:
            choice("labels.learn", name, ("alpha", "epsilon"))
        if "epsilon" in self.learn and self.mode != "smooth":
            raise ValueError(
                "config.labels.learn contains 'epsilon' but labels.mode is not 'smooth': the step "
                "1{Δ > ε} has no gradient in ε; set --config.labels.mode=smooth"
            )
        if self.learn and self.mode == "hard":
            raise ValueError("config.labels.learn is set but labels.mode='hard': hard labels do not depend on α or ε")


def mode_params(mode: str, *, tau: float) -> tuple[float, float]:
    """(τ, hard) of a label mode: soft (0, 0), smooth (``tau``, 0), hard (0, 1); the one place a mode is
    turned into the step's numbers."""
    if mode not in LABEL_MODES:
        raise ValueError(f"label mode must be one of {LABEL_MODES}, got {mode!r}")
    return (tau if mode == "smooth" else 0.0), float(mode == "hard")


def pixel_difference(original: jax.Array, edited: jax.Array) -> jax.Array:
    """Δ = Σ_c |x − x̃| per pixel (eq. 7); a 1-channel or H×W image counts as 3 replicated channels."""
    diff = jnp.abs(original.astype(jnp.float32) - edited.astype(jnp.float32))
    if diff.ndim == 2:
        return 3.0 * diff
    return jnp.sum(diff, axis=-1) * (3.0 / diff.shape[-1] if diff.shape[-1] == 1 else 1.0)


def changed_fraction(original: jax.Array, edited: jax.Array, mask: jax.Array, *, epsilon: float = 0.02) -> jax.Array:
    """V' = #{Δ > ε} / area(mask), clipped to [0, 1] (eq. 6 and 8); 0 for an empty mask."""
    changed = jnp.sum(pixel_difference(original, edited) > epsilon)
    area = jnp.sum(mask)
    return jnp.clip(jnp.where(area > 0, changed / jnp.maximum(area, 1.0), 0.0), 0.0, 1.0)


def soft_label(
    original: jax.Array, edited: jax.Array, mask: jax.Array, *, alpha: float = 10.0, epsilon: float = 0.02
) -> jax.Array:
    """y = 2 / (1 + exp(−α V')) − 1 = tanh(α V' / 2) (eq. 9): 0 when nothing changed, < 1 always."""
    return jnp.tanh(alpha * changed_fraction(original, edited, mask, epsilon=epsilon) / 2.0)


def smooth_changed_fraction(
    original: jax.Array, edited: jax.Array, mask: jax.Array, *, epsilon: float = 0.02, tau: float = 0.005
) -> jax.Array:
    """V' with the indicator ``1{Δ > ε}`` replaced by ``sigmoid((Δ − ε)/τ)``: differentiable in ε, images.

    Unchanged pixels (Δ = 0) count 0 rather than ``sigmoid(−ε/τ)``, so the tails of the many untouched
    pixels do not add up to a label; as τ → 0 this is :func:`changed_fraction`.
    """
    delta = pixel_difference(original, edited)
    changed = jnp.sum(jnp.where(delta > 0, jax.nn.sigmoid((delta - epsilon) / tau), 0.0))
    area = jnp.sum(mask)
    return jnp.clip(jnp.where(area > 0, changed / jnp.maximum(area, 1.0), 0.0), 0.0, 1.0)


def smooth_soft_label(
    original: jax.Array,
    edited: jax.Array,
    mask: jax.Array,
    *,
    alpha: float = 10.0,
    epsilon: float = 0.02,
    tau: float = 0.005,
) -> jax.Array:
    """Differentiable SLA: ``tanh(α V'_τ / 2)`` with the smooth count of :func:`smooth_changed_fraction`."""
    return jnp.tanh(alpha * smooth_changed_fraction(original, edited, mask, epsilon=epsilon, tau=tau) / 2.0)


def label_strength(
    original: jax.Array, edited: jax.Array, mask: jax.Array, *, alpha=10.0, epsilon=0.02, tau=0.0, hard=0.0
) -> jax.Array:
    """y with every option a (traceable) value, so one compiled step serves all label settings.

    ``tau > 0`` selects :func:`smooth_soft_label`, ``tau == 0`` :func:`soft_label`; ``hard`` blends
    towards the hard label: ``y = hard + (1 − hard)·y_SLA`` (1 gives ``hard_label``, 0 the SLA).
    """
    safe_tau = jnp.where(tau > 0, tau, 1.0)  # keeps the unselected branch's gradient finite
    fraction = jnp.where(
        tau > 0,
        smooth_changed_fraction(original, edited, mask, epsilon=epsilon, tau=safe_tau),
        changed_fraction(original, edited, mask, epsilon=epsilon),
    )
    return hard + (1.0 - hard) * jnp.tanh(alpha * fraction / 2.0)


def hard_label(original: jax.Array, edited: jax.Array, mask: jax.Array) -> jax.Array:
    """The ablation "w/o SLA" (eq. 5): 1 for every transformed sample, whatever it changed."""
    del original, edited, mask
    return jnp.float32(1.0)


def targets(classes: jax.Array, strengths: jax.Array, *, num_classes: int) -> jax.Array:
    """Soft target distributions B×K: ``[1 − y, …, y at the edit's class, …]``, ``[1, 0, …]`` for originals."""
    strengths = jnp.where(classes > 0, strengths, 0.0)
    onehot = jax.nn.one_hot(classes, num_classes)
    normal = jax.nn.one_hot(jnp.zeros_like(classes), num_classes)
    return (1.0 - strengths)[:, None] * normal + strengths[:, None] * onehot


def batch_labels(
    originals: jax.Array,
    edited: jax.Array,
    masks: jax.Array,
    classes: jax.Array,
    *,
    mode: str = "soft",
    alpha=10.0,
    epsilon=0.02,
    tau=0.005,
) -> jax.Array:
    """Per-sample label strength y for a batch (0 for originals); ``tau`` only matters for mode "smooth"."""
    if mode not in LABEL_MODES:
        raise ValueError(f"label mode must be one of {LABEL_MODES}, got {mode!r}")
    return traced_batch_labels(
        originals,
        edited,
        masks,
        classes,
        alpha=alpha,
        epsilon=epsilon,
        tau=tau if mode == "smooth" else 0.0,
        hard=1.0 if mode == "hard" else 0.0,
    )


def traced_batch_labels(
    originals: jax.Array,
    edited: jax.Array,
    masks: jax.Array,
    classes: jax.Array,
    *,
    alpha=10.0,
    epsilon=0.02,
    tau=0.0,
    hard=0.0,
) -> jax.Array:
    """:func:`batch_labels` with the label mode given as traced values (see :func:`label_strength`)."""
    y = jax.vmap(lambda a, b, m: label_strength(a, b, m, alpha=alpha, epsilon=epsilon, tau=tau, hard=hard))(
        originals, edited, masks
    )
    return jnp.where(classes > 0, y, 0.0)


def soft_cross_entropy(logits: jax.Array, target_probs: jax.Array) -> jax.Array:
    """Mean cross-entropy of logits B×K against soft target distributions B×K."""
    return jnp.mean(optax.softmax_cross_entropy(logits, target_probs))
