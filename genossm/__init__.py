"""genossm: genomic language modelling with bidirectional selective state-space models."""

__version__ = "0.1.0"

from genossm.errors import GenossmError  # noqa: E402

__all__ = ["GenossmError", "__version__"]
