"""Floating-point operations of a JAX function, counted from the shapes of its convolutions and matrix
products, so that utilisation can be stated on any backend.

XLA's cost analysis does not see convolutions handed to cuDNN (on one H200 it reported 2.3 TFLOP/s for a
step that did about 165), so :func:`count` walks the function's jaxpr instead: a convolution costs 2 × (output
elements) × (kernel window × input channels per group), divided by the input dilation of a
strided convolution's gradient (only the taps on real values count), and a ``dot_general`` 2 × (batch) × M × N × K, one
multiply and one add each. Elementwise work (BatchNorm, activations, the edits, the optimizer) is left out:
in ResNet-18 it is well under 1 % of the total, and it runs at memory speed, not matrix speed.
"""

from __future__ import annotations

import math

import jax
from jax.extend import core as jax_core


def _conv_flops(eqn) -> int:
    out = eqn.outvars[0].aval.shape
    kernel = eqn.invars[1].aval.shape
    numbers = eqn.params["dimension_numbers"]
    out_features = kernel[numbers.rhs_spec[0]]
    window_and_input = math.prod(kernel) // out_features  # kernel window × input channels of one group
    # A strided convolution's input gradient is a convolution of the gradient dilated by the stride: of each
    # window only 1 in prod(lhs_dilation) taps meets a non-zero, and only those are counted.
    dilated = math.prod(eqn.params.get("lhs_dilation") or (1,))
    return 2 * math.prod(out) * window_and_input // dilated


def _dot_flops(eqn) -> int:
    lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
    (contract_l, _), (batch_l, _) = eqn.params["dimension_numbers"]
    k = math.prod(lhs[d] for d in contract_l)
    return 2 * math.prod(eqn.outvars[0].aval.shape) * k


def _sub_jaxprs(eqn):
    for value in eqn.params.values():
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, jax_core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jax_core.Jaxpr):
                yield item


def count_jaxpr(jaxpr) -> int:
    """FLOPs of a jaxpr's convolutions and matrix products; a ``scan`` counts its body ``length`` times, a
    ``cond`` its costliest branch, a ``while`` its body once (its trip count is not known)."""
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            total += _conv_flops(eqn)
        elif name == "dot_general":
            total += _dot_flops(eqn)
        elif name == "cond":
            total += max(count_jaxpr(branch.jaxpr) for branch in eqn.params["branches"])
        else:
            inner = sum(count_jaxpr(sub) for sub in _sub_jaxprs(eqn))
            total += inner * (eqn.params["length"] if name == "scan" else 1)
    return total


def count(fn, *args, **kwargs) -> int:
    """FLOPs of ``fn(*args, **kwargs)`` (arrays or ``jax.ShapeDtypeStruct``s), counted from its jaxpr."""
    return count_jaxpr(jax.make_jaxpr(fn)(*args, **kwargs).jaxpr)
