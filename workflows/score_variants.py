"""genossm score-variants: score a VCF/BCF/TSV of variants (or every substitution of a region) with a
pretrained model. See ``conf/score_variants.yaml`` for the options and ``genossm.tasks.variants`` for
what the scores mean."""

import hydra
from omegaconf import DictConfig, OmegaConf

from genossm.cli import user_errors
from genossm.paths import conf_dir


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="score_variants")
@user_errors
def main(cfg: DictConfig) -> None:
    import lightning as L

    from genossm.tasks.variants import score_variants

    L.seed_everything(cfg.seed, verbose=False)
    trainer = OmegaConf.to_container(cfg.trainer, resolve=False)
    trainer.pop("_target_", None)
    trainer.pop("default_root_dir", None)  # nothing is written there by a predict run
    score_variants(
        cfg.pretrained, cfg.fasta, cfg.output, cfg.variants,
        mode=cfg.mode, region=cfg.region, table=cfg.table, heatmap=cfg.heatmap, embeddings=cfg.embeddings,
        window_len=cfg.window_len, batch_size=cfg.batch_size, strands=cfg.strands, indel_flank=cfg.indel_flank,
        emb_dist=cfg.emb_dist, distance=cfg.distance, pooling=cfg.pooling, tokens_per_forward=cfg.tokens_per_forward,
        chunk_len=cfg.chunk_len, num_workers=cfg.num_workers, cache_dir=cfg.cache_dir, trainer=trainer,
        progress=cfg.progress,
    )


if __name__ == "__main__":
    main()
