"""Gradients laid out as their parameters (and DDP's buckets) are.

A depthwise convolution's weight is ``[C, 1, k, k]``. Fed a channels-last activation
(a token grid reshaped to an image, a concatenation), its backward returns the weight
gradient with channels-last strides: ``[9, 1, 3, 1]`` against the parameter's
``[9, 9, 3, 1]``. Both address the same elements (the strides differ only where the
size is 1), so autograd keeps the gradient as it comes, but DDP compares strides
exactly: it warns "Grad strides do not match bucket view strides" and copies through
a slower path. A hook on each such parameter hands autograd the same gradient as a
view with the parameter's strides: no copy, no warning.
"""

from __future__ import annotations

from torch import Tensor, nn


def same_elements(grad: Tensor, param: Tensor) -> bool:
    """Whether ``grad`` addresses its elements as ``param``'s strides would (they differ only where a size is 1)."""
    return grad.shape == param.shape and all(
        size == 1 or g == p for size, g, p in zip(param.shape, grad.stride(), param.stride())
    )


def as_param_layout(grad: Tensor, param: Tensor) -> Tensor:
    """``grad`` with ``param``'s strides when that is only a relabelling; else ``grad`` itself."""
    if grad.stride() == param.stride() or not same_elements(grad, param):
        return grad
    return grad.as_strided(param.shape, param.stride(), grad.storage_offset())


def keep_grad_layout(model: nn.Module) -> int:
    """Hook every trainable parameter with a size-1 dimension (the only ones whose gradient can
    come with other strides for the same layout); the number hooked."""
    hooked = 0
    for param in model.parameters():
        if param.requires_grad and 1 in param.shape and param.dim() > 1:
            param.register_hook(lambda grad, param=param: as_param_layout(grad, param))
            hooked += 1
    return hooked
