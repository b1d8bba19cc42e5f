"""genossm pretrain: masked-LM pretraining of a BiMamba model on a genome; config: conf/pretrain.yaml.

compose (Hydra) -> instantiate the data module, the task (its model from ``model:``), callbacks, loggers and
the Trainer -> fit (resuming from ``<output>/checkpoints/last.ckpt``), validate -> write the config, the
exported model, the baselines, the plot and ``summary.json`` into the run folder.

Under DDP/FSDP every rank runs this script (Lightning re-runs it for ranks 1, 2, ... on one machine); only
rank 0 writes the config, computes the baselines, exports the model, draws the plot and prints.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import hydra
import torch
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig

from genossm.cli import user_errors
from genossm.config import build_trainer, instantiate, instantiate_all, prepare_run, renamed_keys, save_config, to_plain
from genossm.data.datamodule import fasta_label, fasta_value
from genossm.data.genome import fasta_paths
from genossm.errors import GenossmError, atomic_write
from genossm.models import from_pretrained, save_pretrained
from genossm.paths import conf_dir
from genossm.tasks.baselines import baseline_report
from genossm.tasks.callbacks import CheckpointOnSignal, MetricHistory, TokensPerSecond
from genossm.tasks.loggers import KeepMetricHistory
from genossm.tasks.outputs import format_comparison
from genossm.tasks.plots import plot_history
from genossm.tasks.pretrain import _full_model


RENAMED = {"task.seq_len_warmup": "data.window_len_warmup"}  # old spelling -> new, accepted for one release


def resume_path(cfg: DictConfig, out: Path) -> str | None:
    resume = cfg.get("resume", "auto")
    if resume == "auto":
        last = out / "checkpoints" / "last.ckpt"
        return str(last) if last.exists() else None
    if resume and not Path(str(resume)).exists():
        raise GenossmError(f"resume={resume}: checkpoint not found")
    return str(resume) if resume else None


def stage_metrics(trainer, stage: str) -> dict:
    return {k.split("/", 1)[1]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(f"{stage}/")}


def train(cfg: DictConfig) -> dict:
    """Train, evaluate against the baselines, export; returns the summary (also written to summary.json)."""
    t_start = time.perf_counter()
    if cfg.get("output") is None:
        raise GenossmError("output= is not set: give the run folder, e.g. output=outputs/pretrain/my_run")
    out = Path(str(cfg.output)).absolute()
    fasta_paths(cfg.get("fasta"))  # one path or a list; each must exist
    fasta = fasta_value(cfg.fasta)
    renamed_keys(cfg, RENAMED)
    prepare_run(cfg, num_workers=int(cfg.data.get("num_workers") or 0))

    # instantiate: data, task (and its model), callbacks, loggers, trainer
    dm = instantiate(cfg.data)
    # what the exported model and every checkpoint record: the training window, genome and held-out span
    held_out = [[c, int(s), int(e)] for split in ("val", "test") for c, s, e in dm.intervals(split)]
    absolute = [str(Path(f).absolute()) for f in fasta] if isinstance(fasta, list) else str(Path(fasta).absolute())
    run_extra = {"train_window_len": int(dm.window_len), "fasta": absolute, "held_out": held_out}
    module = instantiate(cfg.task, _convert_="all", model_config=to_plain(cfg.model), extra=run_extra)
    dm.check_window_fits()
    if cfg.get("pretrained"):
        start = from_pretrained(cfg.pretrained)
        if start.config.to_dict() != module.model.config.to_dict():
            raise GenossmError(f"pretrained={cfg.pretrained}: its model config differs from model= ({cfg.pretrained}'s "
                               f"config is {start.config.to_dict()})")
        module.model.load_state_dict(start.state_dict())
    callbacks = instantiate_all(cfg.get("callbacks"))
    if SLURMEnvironment.detect():  # submitit owns the requeue: save last.ckpt on its signal
        callbacks.append(CheckpointOnSignal(out / "checkpoints"))
    history = next((c for c in callbacks if isinstance(c, MetricHistory)), None)
    if history is None:
        history = MetricHistory()
        callbacks.append(history)
    callbacks.append(KeepMetricHistory())  # metrics.csv keeps the rows before a resumed step
    speed = next((c for c in callbacks if isinstance(c, TokensPerSecond)), None)
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoints").mkdir(exist_ok=True)
    trainer = build_trainer(cfg, callbacks, instantiate_all(cfg.get("logger")))
    rank_zero = trainer.is_global_zero  # the ranks are known once the trainer exists
    if rank_zero:
        save_config(cfg, out)

    # run: fit, then validate the final weights (every rank takes part: collectives under DDP/FSDP)
    ckpt_path = resume_path(cfg, out)
    if ckpt_path and rank_zero:
        print(f"resuming from {ckpt_path}")
    t_fit = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    fit_seconds = time.perf_counter() - t_fit
    if trainer.interrupted:
        return {"interrupted": True, "output": str(out)}
    if not history.val or history.val[-1][0] != trainer.global_step:
        trainer.validate(module, datamodule=dm, verbose=False)
    val = stage_metrics(trainer, "val")
    if cfg.get("test_after_fit"):
        trainer.test(module, datamodule=dm, verbose=False)
    test = stage_metrics(trainer, "test")
    model = _full_model(trainer, module, to_plain(cfg.model))
    summary = {
        "output": str(out),
        "global_step": int(trainer.global_step),
        "world_size": int(trainer.world_size),
        "val": val,
        "test": test,
        "baselines": None,
        "tokens_per_second": speed.tokens_per_second if speed else None,  # this rank's
        "fit_seconds": round(fit_seconds, 1),
        "wall_seconds": None,
        "parameters": model.num_parameters() if hasattr(model, "num_parameters") else None,
        "train_window_len": int(dm.window_len),
    }
    if torch.cuda.is_available():
        summary["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if not rank_zero:
        return summary

    # write (rank 0): baselines (once, on the whole validation split), the exported model, plot, summary
    base = None
    if cfg.baselines.enabled:
        t0 = time.perf_counter()
        base = baseline_report(dm.train_bases(cfg.baselines.get("max_train_bases")), dm.eval_bases("val"),
                               max_order=int(cfg.baselines.max_order), pseudocount=float(cfg.baselines.pseudocount))
        base["seconds"] = round(time.perf_counter() - t0, 2)
    summary["baselines"] = base
    model_dir = out / "model"
    save_pretrained(model, model_dir, extra=dict(run_extra, train_window_len=summary["train_window_len"],
                                                 val_bpb=val.get("bpb")))
    plot = plot_history(history, out / "training_curves.png", base, title=f"{fasta_label(fasta)}, step {trainer.global_step}",
                        causal=not model.config.bidirectional)
    summary["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    with atomic_write(out / "summary.json", "w") as handle:
        json.dump(summary, handle, indent=2)
    print_report(trainer, summary, speed, fit_seconds, out, plot)
    return summary


def print_report(trainer, summary: dict, speed, fit_seconds: float, out: Path, plot: Path) -> None:
    val, base = summary["val"], summary["baselines"]
    print()
    if base is not None and "bpb" in val:
        print(format_comparison(val, base))
    elif "bpb" in val:
        print(f"validation bits per base: {val['bpb']:.4f}")
    if speed:
        ranks = f" per rank ({trainer.world_size} ranks)" if trainer.world_size > 1 else ""
        print(f"training speed: {speed.tokens_per_second:,.0f} tokens/s{ranks}; {trainer.global_step} steps in {fit_seconds:.0f} s")
    best = next((c.best_model_path for c in trainer.checkpoint_callbacks if getattr(c, "best_model_path", "")), "")
    print(f"checkpoints: {out / 'checkpoints'}" + (f" (best: {Path(best).name})" if best else ""))
    print(f"model:       {out / 'model'}")
    print(f"plot:        {plot}")
    print(f"summary:     {out / 'summary.json'}")


@hydra.main(config_path=str(conf_dir()), config_name="pretrain", version_base="1.3")
def main(cfg: DictConfig):
    return user_errors(train, renamed=RENAMED)(cfg)


if __name__ == "__main__":
    main()
