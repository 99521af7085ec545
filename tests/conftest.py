"""Test set-up: never touch the network, keep torch to the CPU threads we have."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# CI runs the same examples every time, so a red build is reproducible.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny test tensors run faster on one thread; on a shared 2-core box, much faster."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request: pytest.FixtureRequest) -> str:
    """Device-parametrised tests run on the CPU, and on CUDA where there is one."""
    if request.param == "cuda" and not _cuda_available():
        pytest.skip("no CUDA device on this machine")
    return request.param


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    """A folder on sys.path for fake distributions (modules named ``rkt_*``); registries re-read metadata."""
    from restorekit.registry import refresh_plugins

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("RESTOREKIT_DISABLE_PLUGINS", raising=False)
    refresh_plugins()
    yield tmp_path
    for mod in [m for m in sys.modules if m.startswith("rkt_")]:
        del sys.modules[mod]
    monkeypatch.undo()
    refresh_plugins()
