"""A held-out split of a folder of pairs that never depends on file order or the machine.

Each pair name is ranked by the SHA-256 of its name; the first ``fraction`` of the
ranking is held out. The same names always give the same split; adding pairs later
moves a name out of the held-out set only when a new name ranks before it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from restorekit.errors import DataError


def held_out(names: Sequence[str], fraction: float = 0.1) -> list[str]:
    """The names held out for validation (sorted): ``max(1, round(fraction * N))`` of them."""
    if not 0 < fraction < 1:
        raise DataError(f"the held-out fraction must be between 0 and 1, got {fraction}")
    unique = sorted(set(names))
    if len(unique) < 2:
        raise DataError(f"a held-out split needs at least 2 pairs, found {len(unique)}")
    count = min(len(unique) - 1, max(1, round(fraction * len(unique))))
    ranked = sorted(unique, key=lambda name: hashlib.sha256(name.encode("utf-8")).hexdigest())
    return sorted(ranked[:count])
