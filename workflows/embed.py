"""genossm embed: reverse-complement-invariant embeddings of regions (BED/TSV) or FASTA records.

``output`` ending in ``.npy`` gets an (N, H) float32 array; ``.parquet`` gets the region columns followed
by ``emb_0 .. emb_{H-1}``. Rows are in input order. Written to a temporary file and renamed.
"""

import hydra
from omegaconf import DictConfig

from genossm.cli import user_errors
from genossm.paths import conf_dir


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="embed")
@user_errors
def main(cfg: DictConfig) -> None:
    from genossm.config import prepare_run
    from genossm.tasks.regions import embed_file

    prepare_run(cfg)

    embed_file(cfg.pretrained, cfg.regions, cfg.output, fasta=cfg.fasta, pooling=cfg.pooling,
               region_len=cfg.region_len, batch_size=cfg.batch_size)


if __name__ == "__main__":
    main()
