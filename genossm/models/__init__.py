"""Plain PyTorch models: Mamba block, bidirectional (RC-equivariant) backbone, heads, save/load."""
