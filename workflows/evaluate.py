"""genossm evaluate: bits per base of a saved model on any FASTA, beside Markov baselines; conf/evaluate.yaml."""

import hydra
from omegaconf import DictConfig

from genossm.cli import user_errors
from genossm.paths import conf_dir
from genossm.tasks.pretrain import run_evaluation  # also registers the ${run_id:} resolver


@hydra.main(config_path=str(conf_dir()), config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig):
    return user_errors(run_evaluation)(cfg)


if __name__ == "__main__":
    main()
