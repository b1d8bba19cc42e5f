"""Plain PyTorch models: Mamba block, bidirectional (RC-equivariant) backbone, heads, save/load."""

from genossm.models.bimamba import BiMambaConfig, BiMambaLM
from genossm.models.heads import LMHead, SequenceHead
from genossm.models.hub import (bundled_models, from_pretrained, load_extra, load_region_model, model_path, save_pretrained,
                                save_region_model)
from genossm.models.mamba import cpu_bf16_supported

__all__ = ["BiMambaConfig", "BiMambaLM", "LMHead", "SequenceHead", "save_pretrained", "from_pretrained", "load_extra",
           "save_region_model", "load_region_model", "cpu_bf16_supported", "bundled_models", "model_path"]
