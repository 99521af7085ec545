"""FLOPs of the work a function runs: ``torch.utils.flop_counter`` with two corrections.

Used by ``restorekit train --dry-run`` and the benchmarks. Works on the meta device, so
a full-size model is counted on any machine without memory or a GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils import flop_counter as fc
from torch.utils.flop_counter import FlopCounterMode


def conv_backward_flop(
    grad_out_shape,
    x_shape,
    w_shape,
    _bias,
    _stride,
    _padding,
    _dilation,  # noqa: ANN001
    transposed,
    _output_padding,
    _groups,
    output_mask,
    **kwargs,
) -> int:  # noqa: ANN001
    """Each of grad-input and grad-weight costs one forward convolution.

    torch's own formula computes grad-weight as a convolution that ignores
    ``groups``, which overcounts a depthwise convolution's backward by its
    channel count (26x too many FLOPs for a Restormer training step).
    """
    forward = fc.conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def flop_formulas() -> dict[Any, Any]:
    """Formulas that replace or complete FlopCounterMode's: grouped-convolution backward,
    and the CPU flash attention kernels (fused SDPA on the CPU), which it does not count."""
    aten = torch.ops.aten
    mapping: dict[Any, Any] = {aten.convolution_backward: conv_backward_flop}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):

        def forward(query, key, value, *args, out_shape=None, **kwargs):  # noqa: ANN001, ANN202
            return fc.sdpa_flop_count(query, key, value)

        def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs):  # noqa: ANN001, ANN202
            return fc.sdpa_backward_flop_count(grad_out, query, key, value)

        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = forward
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = backward
    return mapping


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of the matmuls, convolutions and attention ``fn`` runs (2 per multiply-add).

    Elementwise work (norms, activations, softmax) is not counted, as in the
    usual MAC counts; backward passes run inside ``fn`` are counted too.
    """
    with FlopCounterMode(display=False, custom_mapping=flop_formulas()) as counter:
        fn()
    return int(counter.get_total_flops())
