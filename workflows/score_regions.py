"""genossm score-regions: apply a model written by ``genossm finetune`` to a BED/TSV/FASTA of regions.

compose (Hydra) -> instantiate the regions (centred to the model's region length), the region model (backbone
and head from ``pretrained``) and the Trainer -> predict -> write ``output`` (``.tsv``, ``.tsv.gz``, ``.csv``,
``.parquet``): one row per input region, in input order: the region's name/chrom/start/end/strand, then
``score`` (binary: P(class 1)), ``prob_<class>`` and ``pred`` (multi-class) or ``pred`` (regression); written to
a temporary file and renamed.
"""

from __future__ import annotations

import dataclasses
import logging

import hydra
from omegaconf import DictConfig

from genossm.errors import GenossmError
from genossm.options import RunOptions, size
from genossm.paths import conf_dir
from genossm.workflows import user_errors

# torch, Lightning and the data modules are imported inside the run: it says what it does (its first log line)
# before it loads them

log = logging.getLogger("genossm.score_regions")


@dataclasses.dataclass
class ScoreRegionsOptions(RunOptions):
    """The options of ``genossm score-regions`` (``conf/score_regions.yaml``), checked when made."""

    fasta: str | None = None
    """The genome the regions' coordinates refer to (unused for a FASTA of sequences)."""
    pretrained: str | None = None
    """The region model ``genossm finetune`` wrote (its ``model/`` or ``probe/`` folder)."""
    regions: str | None = None
    """A BED/TSV of regions, or a FASTA of sequences."""
    output: str | None = None
    """``.tsv``, ``.tsv.gz``, ``.csv`` or ``.parquet``: one row per input region, in input order."""
    batch_size: int = size(64)
    """Regions per batch."""

    def describe(self) -> str:
        """One line saying what the run scores (the run's first log line)."""
        return f"score-regions: {self.regions} with the region model {self.pretrained}, writing {self.output}"


def score_regions(cfg: DictConfig):
    """Scores of every region (input order) from a fine-tuned region model; written atomically to ``output``."""
    opts = ScoreRegionsOptions.from_config(cfg)
    if not opts.output:
        raise GenossmError("output=PATH is required (.tsv, .tsv.gz, .csv or .parquet)")
    if not opts.pretrained:
        raise GenossmError("pretrained=PATH is required: the model/ (or probe/) folder genossm finetune wrote")
    if not opts.regions:
        raise GenossmError("regions=PATH is required: a BED/TSV of regions, or a FASTA of sequences")
    log.info("%s", opts.describe())
    import torch
    from torch.utils.data import DataLoader

    from genossm.data.regions import open_genome, read_regions, region_tokens
    from genossm.data.windows import RegionDataset
    from genossm.models import load_region_model
    from genossm.tasks.metrics import output_scores
    from genossm.tasks.outputs import input_columns, score_columns, write_table
    from genossm.tasks.regions import RegionModel
    from genossm.tasks.trainer import build_trainer, prepare_run

    prepare_run(cfg)

    # instantiate: the model, the regions, the trainer
    backbone, head, meta = load_region_model(opts.pretrained)
    module = RegionModel(backbone, meta["task"], head.out_features, method="head", pooling=meta["pooling"])
    module.head = head
    regions = read_regions(opts.regions, label_column=None)
    genome = open_genome(opts.fasta, "score-regions") if regions.has_coords else None
    tokens, valid = region_tokens(regions, genome, meta["region_len"])
    loader = DataLoader(RegionDataset(tokens, valid), batch_size=opts.batch_size)
    trainer = build_trainer(cfg, default_root_dir=None, enable_progress_bar=False, enable_checkpointing=False,
                            enable_model_summary=False)

    # run
    batches = trainer.predict(module, dataloaders=loader)
    logits = torch.cat([b["logits"].cpu() for b in batches])[torch.argsort(torch.cat([b["row"].cpu() for b in batches]))]

    # write
    table = input_columns(regions)
    for col, values in score_columns(output_scores(logits, meta["task"]), meta["task"], meta.get("classes"),
                                     threshold=meta.get("threshold")).items():
        table[col] = values
    write_table(table, opts.output)
    print(f"scored {len(table)} regions -> {opts.output}")
    return table


# the run of a composed config (genossm.compose), for the command and for Python
run = score_regions


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="score_regions")
@user_errors
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
