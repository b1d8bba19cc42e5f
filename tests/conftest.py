import os
from pathlib import Path

import pytest
import torch

# Without CUDA the Triton kernels run in Triton's CPU interpreter. The switch is read when triton and the
# kernels are first imported, and Lightning imports triton, so it is set here, before any test module loads.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def shared_data() -> Path:
    """The full genomes and VCFs kept beside the repository; the test skips when they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"full data set not found at {SHARED_DATA} (only the slices in data/ ship with the repository)")
    return SHARED_DATA


@pytest.fixture
def bundled_data() -> Path:
    return DATA


os.environ.setdefault("HYDRA_FULL_ERROR", "0")


@pytest.fixture
def one_torch_thread():
    """Tiny models run many small ops, which are faster on one thread than fighting over two cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A saved random-weight one-layer model (trained window 32), shared by a module's tests."""
    from helpers import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("pretrained") / "tiny")


@pytest.fixture(scope="module")
def scoring_models(tmp_path_factory) -> dict:
    """Models to score variants with (trained window 32), by name: "rc", "plain", "causal"."""
    from helpers import save_scoring_models

    return save_scoring_models(tmp_path_factory.mktemp("models"))
