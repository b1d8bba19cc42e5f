"""genossm score-regions: apply a model written by ``genossm finetune`` to a BED/TSV/FASTA of regions.

The output (``.tsv``, ``.tsv.gz``, ``.csv``, ``.parquet``) has one row per input region, in input order:
the region's name/chrom/start/end/strand, then ``score`` (binary: P(class 1)), ``prob_<class>`` and
``pred`` (multi-class) or ``pred`` (regression). It is written to a temporary file and renamed.
"""

import hydra
from omegaconf import DictConfig

from genossm.cli import user_errors
from genossm.paths import conf_dir


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="score_regions")
@user_errors
def main(cfg: DictConfig) -> None:
    from genossm.config import prepare_run
    from genossm.tasks.regions import score_regions

    prepare_run(cfg)

    score_regions(cfg.pretrained, cfg.regions, cfg.output, fasta=cfg.fasta, batch_size=cfg.batch_size)


if __name__ == "__main__":
    main()
