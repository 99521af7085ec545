"""Performance levers the speed benchmark can switch on, each keeping the model's maths.

* ``sdpa_channel_attention``: Restormer's channel attention (in the bodies and in
  D-R) through ``torch.nn.functional.scaled_dot_product_attention``;
* ``enable_grad_checkpointing``: the bodies' ``grad_checkpointing`` knob (recompute blocks in backward).

Both act on a built model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import common  # noqa: F401  (makes restorekit importable from a checkout)
import torch


def channel_attention_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, temperature: torch.Tensor
) -> torch.Tensor:
    """Restormer's channel attention through ``scaled_dot_product_attention``.

    The same maths as ``restorekit.bodies.blocks.channel_attention``: per head,
    L2-normalised q and k over pixels, affinities scaled by the learnable
    temperature (folded into q, so SDPA's scale is 1), softmax over channels.
    The channels are SDPA's sequence and the pixels its head dimension.
    """
    import torch.nn.functional as F

    b, cq, h, w = q.shape
    qh = F.normalize(q.reshape(b, heads, cq // heads, h * w), dim=-1)
    kh = F.normalize(k.reshape(b, heads, k.shape[1] // heads, h * w), dim=-1)
    vh = v.reshape(b, heads, v.shape[1] // heads, h * w)
    out = F.scaled_dot_product_attention(qh * temperature.to(qh.dtype), kh, vh, scale=1.0)
    return out.reshape(b, cq, h, w)


_ATTENTION_USERS = ("restorekit.bodies.blocks", "restorekit.adapters.dino_restore")


@contextlib.contextmanager
def sdpa_channel_attention(enabled: bool = True) -> Iterator[None]:
    """Route the bodies' and D-R's channel attention through SDPA while inside."""
    if not enabled:
        yield
        return
    import importlib

    modules = [importlib.import_module(name) for name in _ATTENTION_USERS]
    saved = [(m, m.channel_attention) for m in modules if hasattr(m, "channel_attention")]
    try:
        for module, _ in saved:
            module.channel_attention = channel_attention_sdpa
        yield
    finally:
        for module, original in saved:
            module.channel_attention = original


def enable_grad_checkpointing(model: torch.nn.Module) -> int:
    """Switch on the body's ``grad_checkpointing`` knob (``model.body.grad_checkpointing``
    in a recipe), only the body's: a timm backbone has a knob of its own that DPC's pass
    would honour. Returns how many blocks it covers."""
    from restorekit.bodies.blocks import BlockStack, TransformerBlock

    body = getattr(model, "body", None) or model
    for module in body.modules():
        if hasattr(module, "set_grad_checkpointing") and not isinstance(module, BlockStack):
            module.set_grad_checkpointing(True)
    return sum(
        isinstance(block, TransformerBlock)
        for stack in body.modules()
        if isinstance(stack, BlockStack) and stack.grad_checkpointing
        for block in stack
    )
