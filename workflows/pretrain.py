"""genossm pretrain: masked-LM pretraining of a BiMamba model on a genome; config: conf/pretrain.yaml.

compose (Hydra) -> instantiate the data module, the task (its model from ``model:``), callbacks, loggers and
the Trainer -> fit (resuming from ``<output>/checkpoints/last.ckpt``), validate -> write the config, the
exported model, the baselines, the plot and ``summary.json`` into the run folder.

Under DDP/FSDP every rank runs this script (Lightning re-runs it for ranks 1, 2, ... on one machine); only
rank 0 writes the config, computes the baselines, exports the model, draws the plot and prints.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from genossm.atomic import atomic_write
from genossm.checksums import file_sha256
from genossm.config import given_keys, instantiate, instantiate_all, renamed_keys, save_config, to_plain
from genossm.errors import GenossmError
from genossm.options import BaselineOptions, RunOptions, group
from genossm.paths import conf_dir
from genossm.workflows import user_errors

# torch, Lightning and the data modules are imported inside the functions that use them: the run says what it
# does (its first log line) before it loads them

log = logging.getLogger("genossm.pretrain")

RENAMED = {"task.seq_len_warmup": "data.window_len_warmup"}  # old spelling -> new, accepted for one release


@dataclasses.dataclass
class PretrainOptions(RunOptions):
    """The options of ``genossm pretrain`` at the top of ``conf/pretrain.yaml``, checked when made. The groups
    below them are built from their own nodes, which check their arguments: ``data`` (the data module),
    ``model`` (:class:`~genossm.models.BiMambaConfig`), ``task`` (the LightningModule), ``trainer``,
    ``callbacks``, ``logger``."""

    pretrained: str | None = None
    """Start from an exported model (folder, ``bundled:NAME``, ``hf:ORG/NAME``) or a ``.ckpt`` instead of
    random weights."""
    output: str | None = None
    """The run folder: checkpoints, logs, the exported model, the summary and the plot."""
    resume: str | bool | None = "auto"
    """``auto``: continue from ``<output>/checkpoints/last.ckpt`` when it exists; ``false``: a new run;
    ``restart``: start over, keeping the earlier results aside; or a checkpoint of this run to continue from."""
    test_after_fit: bool = False
    """Also report the test split."""
    baselines: BaselineOptions = group(BaselineOptions)
    """The Markov baselines fitted on the training split and reported beside the model."""


# what a run leaves in its folder (besides config.yaml and Hydra's .hydra/, which a failed start also writes)
RESULTS = ("checkpoints", "logs", "model", "summary.json", "training_curves.png", "config.yaml")
RESTART = "restart"  # resume=restart: start over in a folder that holds a run, keeping its results aside


def earlier_results(out: Path) -> list[str]:
    """What an earlier run left in ``out``: checkpoints, the metric history, the exported model, the summary."""
    found = []
    if any((out / "checkpoints").glob("*.ckpt")):
        found.append("checkpoints/")
    if (out / "logs" / "metrics.csv").is_file():
        found.append("logs/metrics.csv")
    if (out / "model").is_dir() and any((out / "model").iterdir()):
        found.append("model/")
    if (out / "summary.json").is_file():
        found.append("summary.json")
    return found


def move_aside(out: Path) -> Path:
    """Move an earlier run's results into ``<out>/previous/<date_time>/`` (resume=restart)."""
    import datetime

    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    aside = out / "previous" / stamp
    n = 0
    while aside.exists():
        n += 1
        aside = out / "previous" / f"{stamp}_{n}"
    aside.mkdir(parents=True)
    for name in RESULTS:
        if (out / name).exists():
            (out / name).replace(aside / name)
    return aside


def resume_path(opts: PretrainOptions, out: Path) -> str | None:
    """The checkpoint to continue from (None: a new run). A folder holding an earlier run is never started
    over without ``resume=restart`` (which keeps the earlier results aside), and never continued from another
    run's checkpoint."""
    resume = opts.resume
    earlier = earlier_results(out)
    held = f"output={out} holds an earlier run ({', '.join(earlier)})"
    restart = (f"resume={RESTART} starts over there, moving the earlier results to {out / 'previous'}/<date_time>/; "
               "or choose another output=")
    if resume == "auto":
        last = out / "checkpoints" / "last.ckpt"
        if last.exists():
            return str(last)
        if earlier:
            raise GenossmError(f"{held} but no checkpoints/last.ckpt to continue from: {restart}")
        return None
    if resume in (None, False, "", "false"):
        if earlier:
            raise GenossmError(f"resume=false: {held}; {restart}")
        return None
    if resume == RESTART:
        if earlier and _rank() == 0:
            aside = move_aside(out)
            print(f"starting over: the earlier run's results were moved to {aside}")
        return None
    path = Path(str(resume))
    if not path.exists():
        raise GenossmError(f"resume={resume}: checkpoint not found")
    if path.is_dir():
        raise GenossmError(f"resume={resume}: is a folder, not a training checkpoint (.ckpt); an exported model "
                           "starts a new run with pretrained= instead")
    if earlier and not path.resolve().is_relative_to((out / "checkpoints").resolve()):
        raise GenossmError(f"resume={resume}: {held}; continuing another run's checkpoint there would replace its "
                           "checkpoints and history: choose another output=")
    return str(path)


def _rank() -> int:
    import os

    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):  # set for every rank but the first process of a run
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


# keys of a run that a resume may not change (its checkpoint's hyperparameters), as the user writes them
_RUN_KEYS = {"train_window_len": "data.window_len", "fasta": "fasta", "fasta_sha256": "the FASTA's content "
             "(its SHA-256)", "held_out": "the held-out intervals (data.val_*/test_* split settings)"}
_MAY_CHANGE = {"max_steps"}  # extending a run (trainer.max_steps) lengthens its schedule


def _plain(value):
    return json.loads(json.dumps(to_plain(value), default=str))


def check_resume(ckpt_path: str, module) -> None:
    """Stop, naming every differing key, when the checkpoint was trained with other settings than this run's
    (a resumed run keeps the checkpoint's: its model, optimiser settings, window, genome and split)."""
    import torch

    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # noqa: BLE001 - truncated, not a checkpoint, another format: one message
        raise GenossmError(f"resume={ckpt_path}: not a readable training checkpoint ({type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else 'unreadable'}); the run folder was left as "
                           "it was") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "model_config" not in (ckpt.get("hyper_parameters") or {}):
        raise GenossmError(f"resume={ckpt_path}: not a genossm pretrain checkpoint (no model config or weights in it)")
    old, new = _plain(dict(ckpt["hyper_parameters"])), _plain(dict(module.hparams))
    differ = []
    for key in sorted(set(old) | set(new)):
        if key in _MAY_CHANGE:
            continue
        a, b = old.get(key), new.get(key)
        if key in ("model_config", "extra"):
            a, b = a or {}, b or {}
            for sub in sorted(set(a) | set(b)):
                if key == "extra" and sub not in a:  # recorded since (a checkpoint of an earlier version)
                    continue
                if a.get(sub) != b.get(sub):
                    name = f"model.{sub}" if key == "model_config" else _RUN_KEYS.get(sub, sub)
                    differ.append(f"{name}: {_short(a.get(sub))} in the run, {_short(b.get(sub))} now")
        elif a != b:
            differ.append(f"{'seed' if key == 'seed' else 'task.' + key}: {_short(a)} in the run, {_short(b)} now")
    if differ:
        raise GenossmError(f"resume from {ckpt_path}: this run was trained with other settings; a resumed run "
                           f"keeps its own, so these must match: {'; '.join(differ)}. Give the run's values (or "
                           f"drop the overrides), or start a new run with another output= (resume={RESTART} "
                           "starts over in this folder, keeping the earlier results aside)")
    if old.get("max_steps") != new.get("max_steps"):
        print(f"the learning-rate schedule now ends at step {new.get('max_steps')} (the run had {old.get('max_steps')})")


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def stage_metrics(trainer, stage: str) -> dict:
    return {k.split("/", 1)[1]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(f"{stage}/")}


def _model_words(model) -> str:
    """``a d_model=64 n_layers=4 model``: the model a run trains, in the words of its config."""
    sizes = " ".join(f"{k}={model.get(k)}" for k in ("d_model", "n_layers") if model is not None and k in model)
    return f"a {sizes} model" if sizes else "the model"


def train(cfg: DictConfig) -> dict:
    """Train, evaluate against the baselines, export; returns the summary (also written to summary.json)."""
    renamed_keys(cfg, RENAMED, given_keys())  # old spellings move to their new keys, once
    opts = PretrainOptions.from_config(cfg)
    if opts.output is None:
        raise GenossmError("output= is not set: give the run folder, e.g. output=outputs/pretrain/my_run")
    out = Path(str(opts.output)).absolute()
    log.info("pretrain: %s on %s, writing %s", _model_words(cfg.get("model")), cfg.get("fasta"), out)
    import torch
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    from genossm.data.genome import fasta_paths
    from genossm.data.token_cache import fasta_label, fasta_value
    from genossm.models import BiMambaConfig, from_pretrained, save_pretrained
    from genossm.tasks.baselines import baseline_report
    from genossm.tasks.callbacks import CheckpointOnSignal, MetricHistory, StopOnNonFinite, TokensPerSecond, non_finite
    from genossm.tasks.loggers import KeepMetricHistory
    from genossm.tasks.plots import plot_history
    from genossm.tasks.pretrain import _full_model
    from genossm.tasks.trainer import build_trainer, prepare_run

    t_start = time.perf_counter()  # wall_seconds: the run, not the imports before it (as before they moved here)
    fasta_paths(cfg.get("fasta"))  # one path or a list; each must exist
    fasta = fasta_value(cfg.fasta)
    BiMambaConfig.from_dict(to_plain(cfg.model), source="model")  # before anything is built
    prepare_run(cfg, num_workers=int(cfg.data.get("num_workers") or 0))

    # instantiate: data, task (and its model), callbacks, loggers, trainer
    dm = instantiate(cfg.data)
    # what the exported model and every checkpoint record: the training window, genome and held-out span
    held_out = [[c, int(s), int(e)] for split in ("val", "test") for c, s, e in dm.intervals(split)]
    absolute = [str(Path(f).absolute()) for f in fasta] if isinstance(fasta, list) else str(Path(fasta).absolute())
    digests = [file_sha256(f) for f in ([absolute] if isinstance(absolute, str) else absolute)]
    run_extra = {"train_window_len": int(dm.window_len), "fasta": absolute, "held_out": held_out,
                 "fasta_sha256": digests[0] if isinstance(absolute, str) else digests}
    module = instantiate(cfg.task, _convert_="all", model_config=to_plain(cfg.model), extra=run_extra)
    dm.check_window_fits()
    if opts.pretrained:
        start = from_pretrained(opts.pretrained)
        if start.config.to_dict() != module.model.config.to_dict():
            raise GenossmError(f"pretrained={opts.pretrained}: its model config differs from model= "
                               f"({opts.pretrained}'s config is {start.config.to_dict()})")
        module.model.load_state_dict(start.state_dict())
    callbacks = instantiate_all(cfg.get("callbacks"))
    if SLURMEnvironment.detect():  # submitit owns the requeue: save last.ckpt on its signal
        callbacks.append(CheckpointOnSignal(out / "checkpoints"))
    history = next((c for c in callbacks if isinstance(c, MetricHistory)), None)
    if history is None:
        history = MetricHistory()
        callbacks.append(history)
    callbacks.append(KeepMetricHistory())  # metrics.csv keeps the rows before a resumed step
    callbacks.insert(0, StopOnNonFinite())  # before the checkpoint callbacks see a step of NaN weights
    speed = next((c for c in callbacks if isinstance(c, TokensPerSecond)), None)
    # before anything is written or a logger opens the folder: what the run continues from, if it may
    ckpt_path = resume_path(opts, out)
    if ckpt_path:
        check_resume(ckpt_path, module)
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoints").mkdir(exist_ok=True)
    trainer = build_trainer(cfg, callbacks, instantiate_all(cfg.get("logger")))
    rank_zero = trainer.is_global_zero  # the ranks are known once the trainer exists
    if rank_zero:
        save_config(cfg, out)

    # run: fit, then validate the final weights (every rank takes part: collectives under DDP/FSDP)
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
    if opts.test_after_fit:
        trainer.test(module, datamodule=dm, verbose=False)
    test = stage_metrics(trainer, "test")
    model = _full_model(trainer, module, to_plain(cfg.model))
    bad = non_finite(model.state_dict())
    if bad:
        raise GenossmError(f"the trained weights ({', '.join(bad[:3])}) hold NaN or infinite values (task.lr="
                           f"{cfg.task.get('lr')}): no model was exported")
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
    if opts.baselines.enabled:
        t0 = time.perf_counter()
        base = baseline_report(dm.train_bases(opts.baselines.max_train_bases), dm.eval_bases("val"),
                               max_order=opts.baselines.max_order, pseudocount=float(opts.baselines.pseudocount))
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
    from genossm.tasks.outputs import format_comparison

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


# the run of a composed config (genossm.compose), for the command and for Python
run = train


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="pretrain")
def main(cfg: DictConfig):
    return user_errors(run)(cfg)


if __name__ == "__main__":
    main()
