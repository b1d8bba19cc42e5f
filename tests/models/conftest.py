import importlib.util

import pytest
import torch

from genossm.models import BiMambaConfig, BiMambaLM

# The chunked CPU backend is the default ("auto") once it exists; the reference loop otherwise.
SCAN = "auto" if importlib.util.find_spec("genossm.ops.selective_scan.chunked") else "reference"


def tiny(**overrides) -> BiMambaConfig:
    values = dict(d_model=16, n_layers=2, d_state=4, d_conv=4, expand=2, scan_backend=SCAN)
    values.update(overrides)
    return BiMambaConfig(**values)


@pytest.fixture
def make_model():
    def make(seed=0, dtype=torch.float32, **overrides) -> BiMambaLM:
        if dtype == torch.float64:  # the fast backends compute in float32; float64 checks use the specification
            overrides.setdefault("scan_backend", "reference")
        torch.manual_seed(seed)
        return BiMambaLM(tiny(**overrides)).to(dtype)

    return make


@pytest.fixture(autouse=True)
def _few_threads(one_torch_thread):
    """Every model test runs on one torch thread (the shared fixture in tests/conftest.py)."""
