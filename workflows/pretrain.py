"""genossm pretrain: masked-LM pretraining (README command (a)); config: conf/pretrain.yaml.

Only composes the config and hands it to genossm.tasks.pretrain.run_pretraining.
"""

import hydra
from omegaconf import DictConfig

from genossm.cli import user_errors
from genossm.paths import conf_dir
from genossm.tasks.pretrain import run_pretraining  # also registers the ${run_id:} resolver


@hydra.main(config_path=str(conf_dir()), config_name="pretrain", version_base="1.3")
def main(cfg: DictConfig):
    return user_errors(run_pretraining)(cfg)


if __name__ == "__main__":
    main()
