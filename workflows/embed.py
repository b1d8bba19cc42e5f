"""genossm embed: reverse-complement-invariant embeddings of regions (BED/TSV) or FASTA records.

compose (Hydra) -> instantiate the sequences (each region as it is, batched with others of its length, or
centred to ``region_len``), the embedder around ``pretrained`` and the Trainer -> predict -> write ``output``:
``.npy`` gets an (N, H) float32 array; ``.parquet`` gets the region columns followed by ``emb_0 ..
emb_{H-1}``. Rows are in input order. Written to a temporary file and renamed.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import lightning as L
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from genossm.atomic import atomic_write
from genossm.data.regions import auto_region_len, center_fit, open_genome, read_regions, region_sequences
from genossm.data.windows import RegionDataset, SameLengthBatches, SequenceDataset
from genossm.errors import GenossmError
from genossm.models import from_pretrained, model_path
from genossm.paths import conf_dir
from genossm.tasks.outputs import input_columns, write_table
from genossm.tasks.regions import RegionEmbedder
from genossm.tasks.trainer import build_trainer, prepare_run
from genossm.workflows import user_errors


def sequence_loader(seqs: list, batch_size: int, region_len: int | str | None) -> DataLoader:
    """With ``region_len`` every sequence centred/padded to it (``auto``: the longest, rounded up); without,
    batches of one length each."""
    if region_len == "auto":
        region_len = auto_region_len(len(s) for s in seqs)
    if region_len:
        fitted = [center_fit(s, int(region_len)) for s in seqs]
        tokens = torch.from_numpy(np.stack([f[0] for f in fitted]).astype(np.int64))
        valid = torch.from_numpy(np.stack([f[1] for f in fitted]))
        return DataLoader(RegionDataset(tokens, valid), batch_size=batch_size)
    return DataLoader(SequenceDataset(seqs), batch_sampler=SameLengthBatches(seqs, batch_size))


def embed_sequences(backbone, seqs: list, pooling: str = "mean", batch_size: int = 64, region_len: int | None = None,
                    trainer: L.Trainer | None = None) -> torch.Tensor:
    """RC-invariant embeddings (N, H) of ``seqs`` in input order, through ``trainer.predict`` (a one-CPU
    Trainer when none is given)."""
    if trainer is None:
        trainer = build_trainer({"trainer": {"accelerator": "cpu", "devices": 1}}, enable_progress_bar=False,
                                enable_checkpointing=False, enable_model_summary=False)
    batches = trainer.predict(RegionEmbedder(backbone, pooling), dataloaders=sequence_loader(seqs, batch_size, region_len))
    rows = torch.cat([b["row"].cpu() for b in batches])
    return torch.cat([b["embedding"].cpu() for b in batches])[torch.argsort(rows)]


def embed(cfg: DictConfig) -> np.ndarray:
    """RC-invariant embeddings of every region / FASTA record, input order, to ``.npy`` or ``.parquet``."""
    output = cfg.get("output")
    if not output:
        raise GenossmError("output=PATH is required (.npy or .parquet)")
    suffix = Path(str(output)).suffix.lower()
    if suffix not in (".npy", ".parquet"):
        raise GenossmError(f"output {output}: the suffix must be .npy or .parquet")
    model_path(cfg.pretrained)  # the error names a missing model
    if OmegaConf.is_missing(cfg, "regions") or not cfg.regions:
        raise GenossmError("regions=PATH is required: a BED/TSV of regions, or a FASTA of sequences")
    prepare_run(cfg)

    # instantiate: the model, the sequences, the trainer
    backbone = from_pretrained(cfg.pretrained)
    regions = read_regions(cfg.regions, label_column=None)
    genome = open_genome(cfg.fasta, "embed") if regions.has_coords else None
    seqs = region_sequences(regions, genome)
    trainer = build_trainer(cfg, default_root_dir=None, enable_progress_bar=False, enable_checkpointing=False,
                            enable_model_summary=False)

    # run
    emb = embed_sequences(backbone, seqs, cfg.pooling, int(cfg.batch_size), cfg.get("region_len"), trainer)
    emb = emb.numpy().astype(np.float32)

    # write
    if suffix == ".npy":
        with atomic_write(output, "wb") as fh:
            np.save(fh, emb)
    else:
        table = input_columns(regions)
        table = pd.concat([table, pd.DataFrame(emb, columns=[f"emb_{i}" for i in range(emb.shape[1])])], axis=1)
        write_table(table, output)
    print(f"embedded {len(emb)} regions ({emb.shape[1]} dims) -> {output}")
    return emb


# the run of a composed config (genossm.compose), for the command and for Python
run = embed


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="embed")
@user_errors
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
