"""genossm: genomic language modelling with bidirectional selective state-space models."""

__version__ = "0.1.0"

from genossm import config as _config  # noqa: E402,F401  (registers the OmegaConf resolvers the configs use)
from genossm.config import set_cpu_threads  # noqa: E402
from genossm.errors import GenossmError  # noqa: E402

__all__ = ["GenossmError", "__version__", "set_cpu_threads"]
