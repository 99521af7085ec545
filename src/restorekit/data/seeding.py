"""Seeds derived from keys, so every random draw is a pure function of its keys.

A training sample's randomness comes from ``derive_seed(seed, step, index)``:
it does not depend on which process or DataLoader worker computes it, which is
what makes resume exact and DDP equal to one process.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

_MASK64 = (1 << 64) - 1


def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys (numpy's SeedSequence hashing)."""
    entropy = [int(k) & _MASK64 for k in keys]
    state = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def as_generator(rng: Any = None) -> torch.Generator:
    """A CPU ``torch.Generator`` from an int seed, a generator, or ``None``.

    ``None`` draws a seed from torch's global generator, so ``torch.manual_seed``
    still makes an unseeded call reproducible.
    """
    if isinstance(rng, torch.Generator):
        return rng
    if rng is None:
        rng = int(torch.randint(0, 2**62, (), dtype=torch.int64).item())
    if isinstance(rng, (bool, float)) or not isinstance(rng, (int, np.integer)):
        raise TypeError(f"rng must be an int seed, a torch.Generator or None, got {type(rng).__name__}")
    return torch.Generator().manual_seed(derive_seed(int(rng)))


def draw_seed(gen: torch.Generator) -> int:
    """A fresh integer seed drawn from ``gen`` (to seed a nested random process)."""
    return int(torch.randint(0, 2**62, (), generator=gen, dtype=torch.int64).item())
