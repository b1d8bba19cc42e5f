"""genossm finetune: fine-tune, train a head, or linear-probe a pretrained model on labelled regions.

Writes to the run folder (``output=PATH`` or the Hydra run folder): ``model/`` (the trained region model,
for ``genossm score-regions``), ``probe/`` (the linear probe in the same format), ``predictions.tsv`` (one
row per region, input order), ``metrics.json`` (per method and split), ``roc.png``/``pr.png``, ``config.yaml``.
"""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from genossm.cli import user_errors
from genossm.errors import atomic_write
from genossm.paths import conf_dir


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="finetune")
@user_errors
def main(cfg: DictConfig) -> None:
    from genossm.tasks.regions import run_finetune

    out = Path(HydraConfig.get().runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "config.yaml", "w") as fh:
        fh.write(OmegaConf.to_yaml(cfg, resolve=True))
    run_finetune(cfg, out)


if __name__ == "__main__":
    main()
