"""genossm embed: reverse-complement-invariant embeddings of regions (BED/TSV) or FASTA records.

compose (Hydra) -> instantiate the sequences (each region as it is, batched with others of its length, or
centred to ``region_len``), the embedder around ``pretrained`` and the Trainer -> predict -> write ``output``:
``.npy`` gets an (N, H) float32 array; ``.parquet`` gets the region columns followed by ``emb_0 ..
emb_{H-1}``. Rows are in input order. Written to a temporary file and renamed.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from genossm.atomic import atomic_write
from genossm.errors import GenossmError
from genossm.options import RunOptions, size
from genossm.paths import conf_dir
from genossm.workflows import user_errors

if TYPE_CHECKING:
    import lightning as L
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

# torch, Lightning and the data modules are imported inside the functions that use them: the run says what it
# does (its first log line) before it loads them

log = logging.getLogger("genossm.embed")


@dataclasses.dataclass
class EmbedOptions(RunOptions):
    """The options of ``genossm embed`` (``conf/embed.yaml``), checked when made."""

    fasta: str | None = None
    """The genome the regions' coordinates refer to (unused for a FASTA of sequences)."""
    pretrained: str | None = None
    """The model: an exported folder, a ``.ckpt``, ``bundled:NAME`` or ``hf:ORG/NAME``."""
    regions: str | None = None
    """A BED/TSV of regions, or a FASTA of sequences."""
    output: str | None = None
    """``.npy`` (an (N, H) float32 array) or ``.parquet`` (the region columns, then ``emb_0 ..``)."""
    pooling: str = "mean"
    """``mean`` or ``center``: how the per-base embeddings become one."""
    region_len: int | str | None = size(None, null=True, auto=True)
    """null: each region as it is; N: centred and cropped/padded to N bases; auto: the longest, rounded up."""
    batch_size: int = size(64)
    """Regions per batch."""

    def describe(self) -> str:
        """One line saying what the run embeds (the run's first log line)."""
        return f"embed: {self.regions} with the model {self.pretrained}, writing {self.output}"


def sequence_loader(seqs: list, batch_size: int, region_len: int | str | None) -> DataLoader:
    """With ``region_len`` every sequence centred/padded to it (``auto``: the longest, rounded up); without,
    batches of one length each."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from genossm.data.regions import auto_region_len, center_fit
    from genossm.data.windows import RegionDataset, SameLengthBatches, SequenceDataset

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
    import torch

    from genossm.tasks.regions import RegionEmbedder
    from genossm.tasks.trainer import build_trainer

    if trainer is None:
        trainer = build_trainer({"trainer": {"accelerator": "cpu", "devices": 1}}, enable_progress_bar=False,
                                enable_checkpointing=False, enable_model_summary=False)
    batches = trainer.predict(RegionEmbedder(backbone, pooling), dataloaders=sequence_loader(seqs, batch_size, region_len))
    rows = torch.cat([b["row"].cpu() for b in batches])
    return torch.cat([b["embedding"].cpu() for b in batches])[torch.argsort(rows)]


def embed(cfg: DictConfig) -> np.ndarray:
    """RC-invariant embeddings of every region / FASTA record, input order, to ``.npy`` or ``.parquet``."""
    opts = EmbedOptions.from_config(cfg)
    output = opts.output
    if not output:
        raise GenossmError("output=PATH is required (.npy or .parquet)")
    suffix = Path(str(output)).suffix.lower()
    if suffix not in (".npy", ".parquet"):
        raise GenossmError(f"output {output}: the suffix must be .npy or .parquet")
    if not opts.pretrained:
        raise GenossmError("pretrained=PATH is required: an exported model folder, a .ckpt, bundled:NAME or "
                           "hf:ORG/NAME")
    if not opts.regions:
        raise GenossmError("regions=PATH is required: a BED/TSV of regions, or a FASTA of sequences")
    log.info("%s", opts.describe())
    import numpy as np
    import pandas as pd

    from genossm.data.regions import open_genome, read_regions, region_sequences
    from genossm.models import from_pretrained, model_path
    from genossm.tasks.outputs import input_columns, write_table
    from genossm.tasks.trainer import build_trainer, prepare_run

    model_path(opts.pretrained)  # the error names a missing model
    prepare_run(cfg)

    # instantiate: the model, the sequences, the trainer
    backbone = from_pretrained(opts.pretrained)
    regions = read_regions(opts.regions, label_column=None)
    genome = open_genome(opts.fasta, "embed") if regions.has_coords else None
    seqs = region_sequences(regions, genome)
    trainer = build_trainer(cfg, default_root_dir=None, enable_progress_bar=False, enable_checkpointing=False,
                            enable_model_summary=False)

    # run
    emb = embed_sequences(backbone, seqs, opts.pooling, opts.batch_size, opts.region_len, trainer)
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
