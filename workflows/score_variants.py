"""genossm score-variants: score a VCF/BCF/TSV of variants (or every substitution of a region) with a
pretrained model. See ``conf/score_variants.yaml`` for the options and ``genossm.tasks.variants`` for
what the scores mean."""

import hydra
from omegaconf import DictConfig

from genossm.cli import user_errors
from genossm.paths import conf_dir


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="score_variants")
@user_errors
def main(cfg: DictConfig) -> None:
    from genossm.config import build_trainer, prepare_run
    from genossm.tasks.variants import score_variants

    prepare_run(cfg, num_workers=cfg.num_workers)
    # a predict run writes nothing but its outputs: no logger, checkpoint or root folder
    trainer = build_trainer(cfg, default_root_dir=None, enable_progress_bar=False, enable_checkpointing=False,
                            enable_model_summary=False)
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
