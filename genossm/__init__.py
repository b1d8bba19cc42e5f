"""genossm: genomic language modelling with bidirectional selective state-space models."""

__version__ = "0.1.0"

import sys as _sys  # noqa: E402

from genossm import config as _config  # noqa: E402,F401  (registers the OmegaConf resolvers the configs use)

if "torch" not in _sys.modules:  # torch's large CPU tensors on huge pages (unless the user chose)
    _config.huge_page_environment()

from genossm.config import compose, set_cpu_threads  # noqa: E402
from genossm.errors import GenossmError  # noqa: E402

__all__ = ["GenossmError", "__version__", "compose", "set_cpu_threads"]
