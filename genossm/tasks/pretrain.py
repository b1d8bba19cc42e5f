"""Masked-language-model pretraining of a BiMamba model on genome windows (a LightningModule).

Objective (bidirectional models, BERT style): in every window, each A/C/G/T base at a real position
(``valid``) is chosen as a target with probability ``mask_prob`` (15 %). A chosen base is replaced by
<mask> (80 %), by a random base (10 %) or left as it is (10 %); the loss is the cross-entropy of the
model's A/C/G/T logits at the chosen positions. N and padding are never chosen. Soft-masked (lowercase,
usually repeat) targets can weigh less in the training loss (``softmask_weight`` < 1).

Causal models (``bidirectional: false``) are trained on next-base prediction at every position whose
next base is a real A/C/G/T; no masking.

Validation and test measure the model, not the objective's tricks: every chosen position becomes <mask>
(``eval_mask_all``; a left-unchanged target would show the model its answer) and the masks are drawn
from a generator keyed by the batch index, so every validation pass scores the same positions. Metrics
(per stage ``val/`` and ``test/``): ``loss`` (weighted as in training), ``nll`` (nats per base,
unweighted), ``bpb`` (bits per base = nll / ln 2), ``ppl`` (exp nll), ``acc`` (arg-max accuracy).

The masking RNG is a generator seeded from (seed, stage, global step, batch index, rank), so a run
resumed from a checkpoint draws exactly the masks the uninterrupted run would have drawn, and each
rank masks differently.

Optimiser: AdamW (no weight decay on biases, norms and the 1-D SSM parameters) with linear warm-up then
cosine decay to ``min_lr_ratio * lr`` at the last step.

Sequence-length warm-up (HyenaDNA style, ``seq_len_warmup``): the data module's window starts at
``start_len`` and is multiplied by ``growth`` every ``epochs_per_stage`` epochs until it reaches the
configured ``window_len``.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Mapping

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics import Metric

from genossm.data.tokenizer import MASK, NUM_BASES
from genossm.errors import GenossmError

LN2 = math.log(2.0)


def make_generator(device: torch.device, *key: Any) -> torch.Generator:
    """A torch generator on ``device`` seeded by a stable hash of ``key`` (ints and strings)."""
    digest = hashlib.blake2b(repr(tuple(key)).encode(), digest_size=8).digest()
    gen = torch.Generator(device=device)
    gen.manual_seed(int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF)
    return gen


def choose_targets(tokens: torch.Tensor, valid: torch.Tensor | None, mask_prob: float, generator: torch.Generator) -> torch.Tensor:
    """Bool (B, L): the positions the model must predict; only real A/C/G/T bases can be chosen."""
    eligible = tokens < NUM_BASES
    if valid is not None:
        eligible &= valid
    draw = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    return eligible & (draw < mask_prob)


def corrupt(tokens: torch.Tensor, targets: torch.Tensor, generator: torch.Generator,
            mask_token_frac: float = 0.8, random_token_frac: float = 0.1) -> torch.Tensor:
    """The model's input: chosen targets -> <mask> (mask_token_frac), a random base (random_token_frac), else unchanged."""
    draw = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    random_bases = torch.randint(0, NUM_BASES, tokens.shape, generator=generator, device=tokens.device)
    inputs = tokens.clone()
    to_mask = targets & (draw < mask_token_frac)
    to_random = targets & (draw >= mask_token_frac) & (draw < mask_token_frac + random_token_frac)
    inputs[to_mask] = MASK
    inputs[to_random] = random_bases[to_random]
    return inputs


class BitsPerBase(Metric):
    """Sums of per-base negative log-likelihood, weighted loss and correct arg-max over an epoch (DDP-synced)."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        for name in ("nll", "weighted_nll", "weight", "correct", "count"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, nll: torch.Tensor, weight: torch.Tensor, correct: torch.Tensor) -> None:
        self.nll += nll.double().sum()
        self.weighted_nll += (nll.double() * weight.double()).sum()
        self.weight += weight.double().sum()
        self.correct += correct.double().sum()
        self.count += nll.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.count.clamp(min=1)
        nll = self.nll / n
        return {
            "loss": (self.weighted_nll / self.weight.clamp(min=1e-12)).float(),
            "nll": nll.float(),
            "bpb": (nll / LN2).float(),
            "ppl": torch.exp(nll).float(),
            "acc": (self.correct / n).float(),
            "n_bases": self.count.float(),
        }


class MaskedLM(L.LightningModule):
    """Masked-LM (or next-base, for causal configs) pretraining of :class:`genossm.models.BiMambaLM`."""

    def __init__(
        self,
        model_config: Mapping,
        lr: float = 2e-3,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        max_steps: int | None = None,
        mask_prob: float = 0.15,
        mask_token_frac: float = 0.8,
        random_token_frac: float = 0.1,
        softmask_weight: float = 1.0,
        eval_mask_all: bool = True,
        seq_len_warmup: Mapping | None = None,
        seed: int = 0,
        extra: Mapping | None = None,
        model: nn.Module | None = None,
    ):
        super().__init__()
        model_config = dict(model_config)
        if not 0.0 < mask_prob < 1.0:
            raise GenossmError(f"task.mask_prob must be between 0 and 1, got {mask_prob}")
        if mask_token_frac < 0 or random_token_frac < 0 or mask_token_frac + random_token_frac > 1:
            raise GenossmError("task.mask_token_frac + task.random_token_frac must be within [0, 1]")
        if not 0.0 <= softmask_weight:
            raise GenossmError(f"task.softmask_weight must be >= 0, got {softmask_weight}")
        self.save_hyperparameters(ignore=["model"])
        if model is None:
            from genossm.models import BiMambaLM

            model = BiMambaLM(model_config)
        self.model = model
        cfg = getattr(model, "config", None)
        self.causal = not getattr(cfg, "bidirectional", model_config.get("bidirectional", True))
        self.metrics = nn.ModuleDict({"val": BitsPerBase(), "test": BitsPerBase()})
        self.target_window_len: int | None = None

    # ---- the objective ---------------------------------------------------------------------------------
    def mask_batch(self, batch: Mapping, stage: str, batch_idx: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(model input (B, L), targets bool (B, L), labels (B, L)) for one batch.

        For causal models the targets at t are the bases at t + 1 (labels shifted accordingly)."""
        tokens = batch["tokens"]
        valid = batch.get("valid")
        if self.causal:
            labels = torch.roll(tokens, -1, dims=1)
            targets = labels < NUM_BASES
            if valid is not None:
                targets &= torch.roll(valid, -1, dims=1) & valid
            targets[:, -1] = False
            return tokens, targets, labels
        hp = self.hparams
        step = self.global_step if stage == "train" else 0
        gen = make_generator(tokens.device, int(hp.seed), stage, int(step), int(batch_idx), int(self.global_rank))
        targets = choose_targets(tokens, valid, hp.mask_prob, gen)
        if stage == "train" or not hp.eval_mask_all:
            inputs = corrupt(tokens, targets, gen, hp.mask_token_frac, hp.random_token_frac)
        else:
            inputs = corrupt(tokens, targets, gen, 1.0, 0.0)
        return inputs, targets, tokens

    def shared_step(self, batch: Mapping, stage: str, batch_idx: int) -> dict[str, torch.Tensor]:
        inputs, targets, labels = self.mask_batch(batch, stage, batch_idx)
        logits = self.model(inputs)  # (B, L, 4)
        chosen_logits = logits[targets].float()  # (n, 4)
        chosen_labels = labels[targets].long()
        nll = F.cross_entropy(chosen_logits, chosen_labels, reduction="none")  # nats, (n,)
        weight = torch.ones_like(nll)
        softmask = batch.get("softmask")
        if softmask is not None and self.hparams.softmask_weight != 1.0:
            soft = torch.roll(softmask, -1, dims=1) if self.causal else softmask
            weight = torch.where(soft[targets], torch.full_like(nll, self.hparams.softmask_weight), weight)
        if nll.numel():
            loss = (nll * weight).sum() / weight.sum().clamp(min=1e-12)
        else:  # no base chosen (tiny or all-N window): a zero loss that still touches the graph
            loss = logits.sum() * 0.0
        correct = chosen_logits.argmax(-1) == chosen_labels
        return {"loss": loss, "nll": nll, "weight": weight, "correct": correct, "inputs": inputs, "targets": targets}

    def training_step(self, batch, batch_idx):
        out = self.shared_step(batch, "train", batch_idx)
        n = out["nll"].numel()
        bsz = batch["tokens"].shape[0]
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=bsz)
        if n:
            self.log("train/bpb", out["nll"].mean() / LN2, prog_bar=True, batch_size=bsz)
        return out["loss"]

    def _eval_step(self, batch, batch_idx, stage):
        out = self.shared_step(batch, stage, batch_idx)
        self.metrics[stage].update(out["nll"].detach(), out["weight"].detach(), out["correct"])
        return out["loss"]

    def validation_step(self, batch, batch_idx):
        return self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        return self._eval_step(batch, batch_idx, "test")

    def _eval_epoch_end(self, stage):
        values = self.metrics[stage].compute()
        self.metrics[stage].reset()
        if self.trainer.sanity_checking:
            return
        # the metric states are already summed over DDP ranks (torchmetrics), so every rank holds the same values;
        # sync_dist keeps Lightning's epoch-level logging consistent across ranks (and quiet)
        self.log_dict({f"{stage}/{k}": v for k, v in values.items() if k != "bpb"}, prog_bar=False, sync_dist=True)
        self.log(f"{stage}/bpb", values["bpb"], prog_bar=True, sync_dist=True)

    def on_validation_epoch_end(self):
        self._eval_epoch_end("val")

    def on_test_epoch_end(self):
        self._eval_epoch_end("test")

    # ---- sequence-length warm-up ---------------------------------------------------------------------
    def window_len_for_epoch(self, epoch: int, target: int) -> int:
        sched = self.hparams.seq_len_warmup
        if not sched:
            return target
        start = int(sched.get("start_len", 1024))
        growth = float(sched.get("growth", 2))
        per_stage = max(1, int(sched.get("epochs_per_stage", 1)))
        return int(min(target, start * growth ** (epoch // per_stage)))

    def on_fit_start(self):
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and getattr(dm, "window_len", None) is not None and self.target_window_len is None:
            self.target_window_len = int(dm.window_len)

    def on_train_epoch_start(self):
        dm = getattr(self.trainer, "datamodule", None)
        if not self.hparams.seq_len_warmup or dm is None or self.target_window_len is None:
            return
        n = self.window_len_for_epoch(self.current_epoch, self.target_window_len)
        if n != dm.window_len:
            dm.set_window_len(n)
        self.log("train/window_len", float(n))

    def on_save_checkpoint(self, checkpoint):
        checkpoint["target_window_len"] = self.target_window_len

    def on_load_checkpoint(self, checkpoint):
        self.target_window_len = checkpoint.get("target_window_len")

    # ---- optimisation ---------------------------------------------------------------------------------
    def total_steps(self) -> int:
        if self.hparams.max_steps and self.hparams.max_steps > 0:
            return int(self.hparams.max_steps)
        est = self.trainer.estimated_stepping_batches
        return int(est) if math.isfinite(est) else 100_000

    def configure_optimizers(self):
        hp = self.hparams
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or getattr(p, "_no_weight_decay", False) else decay).append(p)
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=hp.lr, betas=tuple(hp.betas),
        )
        total, warmup, floor = self.total_steps(), int(hp.warmup_steps), float(hp.min_lr_ratio)

        def lr_lambda(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# =====================================================================================================
# The run: what ``genossm pretrain`` does with a composed config (workflows/pretrain.py calls this).
# =====================================================================================================

from genossm.config import check_trainer, fsdp_strategy, instantiate, run_id  # noqa: E402,F401  (moved)


def eval_sequences(dm, split: str = "val") -> list:
    """The bases the model is scored on for ``split``: every real position of every evaluation window, one
    array per window (the model sees no context beyond its window, nor does the Markov model)."""
    seqs = []
    for batch in dm.eval_dataset(split, all_ranks=True):
        for tokens, valid in zip(batch["tokens"], batch["valid"]):
            seqs.append(tokens[valid].numpy())
    return seqs


def train_sequences(dm, max_bases: int | None = None) -> list:
    """The training split's bases (interval by interval; the first ``max_bases`` when capped)."""
    seqs, total = [], 0
    for contig, start, end in dm.intervals("train"):
        if max_bases is not None and total >= max_bases:
            break
        if max_bases is not None:
            end = min(end, start + max_bases - total)
        ids, _ = dm.cache.tokens(contig, start, end)
        seqs.append(ids)
        total += end - start
    return seqs


def format_comparison(model_bpb: float, base: dict, label: str = "validation") -> str:
    lines = [
        f"{label} bits per base ({base['n_bases']:,} bases):",
        f"  model                              {model_bpb:.4f}",
        f"  composition entropy (order 0)      {base['composition_entropy']:.4f}",
        f"  best Markov (order {base['best_order']}, k <= {max(base['markov'])})     {base['best_markov']:.4f}",
    ]
    verdict = "beats" if model_bpb < base["composition_entropy"] else "does NOT beat"
    lines.append(f"  the model {verdict} the composition entropy"
                 + (" and the best Markov model" if model_bpb < base["best_markov"] else ""))
    return "\n".join(lines)


class ResumableLoader:
    """The training DataLoader with a ``state_dict``: the number of batches of the current epoch already
    trained on. Lightning stores it in every checkpoint; after a resume the first ``__iter__`` skips that many
    batches, so the run continues with exactly the batch the interrupted one would have trained on next (the
    data module's batches are a pure function of (seed, epoch, rank, index), and its epoch comes from the
    restored trainer)."""

    def __init__(self, loader, trainer_fn):
        self.loader = loader
        self._trainer_fn = trainer_fn
        self._skip = 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        it = iter(self.loader)
        skip, self._skip = self._skip, 0
        for _ in range(skip):
            next(it, None)
        return it

    def __getattr__(self, name):  # dataset, batch_size, ... for Lightning's introspection
        return getattr(self.__dict__["loader"], name)

    def state_dict(self) -> dict:
        progress = self._trainer_fn().fit_loop.epoch_loop.batch_progress.current
        return {"batches_done": int(progress.processed)}

    def load_state_dict(self, state: dict) -> None:
        self._skip = int(state.get("batches_done", 0))


def _make_resumable(dm, trainer_fn) -> None:
    original = dm.train_dataloader
    dm.train_dataloader = lambda: ResumableLoader(original(), trainer_fn)


def fasta_value(fasta):
    """``fasta`` as JSON/YAML wants it: one path string, or a list of them for a genome in several files."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(fasta):
        fasta = OmegaConf.to_container(fasta, resolve=True)
    return [str(f) for f in fasta] if isinstance(fasta, (list, tuple)) else str(fasta)


def fasta_label(fasta) -> str:
    """A short name for titles and messages: the file name, or the file names joined by ``+``."""
    from pathlib import Path

    value = fasta_value(fasta)
    return " + ".join(Path(f).name for f in value) if isinstance(value, list) else Path(value).name


def _check_config(cfg, dm) -> None:
    from genossm.data.genome import fasta_paths

    fasta_paths(cfg.get("fasta"))  # each file exists (the error names the missing one)
    ivs = dm.intervals("train")
    longest = max((e - s for _, s, e in ivs), default=0)
    if dm.window_len > longest:
        raise GenossmError(
            f"data.window_len={dm.window_len:,} is longer than the longest training interval of {fasta_label(cfg.fasta)} "
            f"({longest:,} bases): every window would be mostly padding; choose data.window_len <= {longest:,}"
        )


def _full_model(trainer, module, model_config):
    """The trained model with every parameter on this process. Under FSDP the parameters are sharded over the
    ranks: gather the full state dict (a collective: every rank calls this; rank 0 receives it)."""
    if "FSDP" not in type(trainer.strategy).__name__:
        return module.model
    from genossm.models import BiMambaLM

    state = trainer.strategy.lightning_module_state_dict()
    if not trainer.is_global_zero:
        return None
    model = BiMambaLM(model_config)
    prefix = "model."
    model.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    return model


def run_pretraining(cfg) -> dict:
    """Train, evaluate against the baselines, export; returns the summary (also written to summary.json).

    Under DDP/FSDP every rank runs this function; only rank 0 writes the config, computes the baselines,
    exports the model, draws the plot and prints (Lightning's checkpoints and logs are rank 0's too)."""
    import json
    import time
    from pathlib import Path

    from lightning.pytorch.plugins.environments import SLURMEnvironment
    from omegaconf import OmegaConf

    from genossm.config import build_trainer, prepare_run
    from genossm.data.genome import fasta_paths
    from genossm.errors import atomic_write
    from genossm.models import from_pretrained, save_pretrained
    from genossm.tasks.baselines import baseline_report
    from genossm.tasks.callbacks import CheckpointOnSignal, MetricHistory, TokensPerSecond, plot_history

    t_start = time.perf_counter()
    if cfg.get("output") is None:
        raise GenossmError("output= is not set: give the run folder, e.g. output=outputs/pretrain/my_run")
    out = Path(str(cfg.output)).absolute()
    prepare_run(cfg, num_workers=int(cfg.data.get("num_workers") or 0))

    fasta_paths(cfg.get("fasta"))  # one path or a list; each must exist
    fasta = fasta_value(cfg.fasta)
    check_trainer(cfg.get("trainer"))
    dm = instantiate(cfg.data)
    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    task_kwargs = OmegaConf.to_container(cfg.task, resolve=True)
    task_kwargs.pop("_target_", None)
    module = MaskedLM(model_config=model_config, extra={"train_window_len": int(dm.window_len)}, **task_kwargs)
    _check_config(cfg, dm)

    if cfg.get("pretrained"):
        start = from_pretrained(cfg.pretrained)
        if start.config.to_dict() != module.model.config.to_dict():
            raise GenossmError(f"pretrained={cfg.pretrained}: its model config differs from model= ({cfg.pretrained}'s "
                               f"config is {start.config.to_dict()})")
        module.model.load_state_dict(start.state_dict())

    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoints").mkdir(exist_ok=True)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    if SLURMEnvironment.detect():  # submitit owns the requeue: save last.ckpt on its signal
        callbacks.append(CheckpointOnSignal(out / "checkpoints"))
    history = next((c for c in callbacks if isinstance(c, MetricHistory)), None)
    if history is None:
        history = MetricHistory()
        callbacks.append(history)
    speed = next((c for c in callbacks if isinstance(c, TokensPerSecond)), None)
    trainer = build_trainer(cfg, callbacks, loggers)
    rank_zero = trainer.is_global_zero  # the ranks are known once the trainer exists
    if rank_zero:
        with atomic_write(out / "config.yaml", "w") as handle:
            handle.write(OmegaConf.to_yaml(cfg, resolve=True))

    ckpt_path = None
    resume = cfg.get("resume", "auto")
    if resume == "auto":
        last = out / "checkpoints" / "last.ckpt"
        ckpt_path = str(last) if last.exists() else None
    elif resume:
        if not Path(str(resume)).exists():
            raise GenossmError(f"resume={resume}: checkpoint not found")
        ckpt_path = str(resume)
    if ckpt_path and rank_zero:
        print(f"resuming from {ckpt_path}")

    _make_resumable(dm, lambda: trainer)
    t_fit = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    fit_seconds = time.perf_counter() - t_fit
    if trainer.interrupted:
        return {"interrupted": True, "output": str(out)}

    # every rank takes part in these (collectives under DDP/FSDP)
    if not history.val or history.val[-1][0] != trainer.global_step:
        trainer.validate(module, datamodule=dm, verbose=False)
    val = {k.split("/", 1)[1]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if cfg.get("test_after_fit"):
        trainer.test(module, datamodule=dm, verbose=False)
    test = {k.split("/", 1)[1]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    model = _full_model(trainer, module, model_config)

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
        "train_window_len": int(module.target_window_len or dm.window_len),
    }
    if torch.cuda.is_available():
        summary["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if not rank_zero:
        return summary

    # rank 0 only from here: baselines (once, on the whole validation split), export, plot, printing
    base = None
    if cfg.baselines.enabled:
        t0 = time.perf_counter()
        base = baseline_report(train_sequences(dm, cfg.baselines.get("max_train_bases")), eval_sequences(dm, "val"),
                               max_order=int(cfg.baselines.max_order), pseudocount=float(cfg.baselines.pseudocount))
        base["seconds"] = round(time.perf_counter() - t0, 2)
    summary["baselines"] = base
    ckpt_dir = out / "checkpoints"
    model_dir = out / "model"
    extra = {"train_window_len": summary["train_window_len"], "val_bpb": val.get("bpb"), "fasta": fasta}
    save_pretrained(model, model_dir, extra=extra)
    plot = plot_history(history, out / "training_curves.png", base, title=f"{fasta_label(fasta)}, step {trainer.global_step}")
    summary["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    with atomic_write(out / "summary.json", "w") as handle:
        json.dump(summary, handle, indent=2)

    print()
    if base is not None and "bpb" in val:
        print(format_comparison(val["bpb"], base))
    elif "bpb" in val:
        print(f"validation bits per base: {val['bpb']:.4f}")
    if speed:
        ranks = f" per rank ({trainer.world_size} ranks)" if trainer.world_size > 1 else ""
        print(f"training speed: {speed.tokens_per_second:,.0f} tokens/s{ranks}; {trainer.global_step} steps in {fit_seconds:.0f} s")
    best = next((c.best_model_path for c in trainer.checkpoint_callbacks if getattr(c, "best_model_path", "")), "")
    print(f"checkpoints: {ckpt_dir}" + (f" (best: {Path(best).name})" if best else ""))
    print(f"model:       {model_dir}")
    print(f"plot:        {plot}")
    print(f"summary:     {out / 'summary.json'}")
    return summary


# =====================================================================================================
# genossm evaluate: bits per base of a saved model on any FASTA (workflows/evaluate.py calls this).
# =====================================================================================================


def _eval_intervals(cache, contigs, regions) -> list:
    from genossm.data.windows import read_bed

    if regions:
        return read_bed(regions, cache)
    return [(name, 0, cache.lengths[name]) for name in cache.contig_names]


def _baseline_training_bases(cfg, model_extra: dict, eval_cache, eval_ivs) -> tuple[list, str]:
    """Bases the Markov baseline is fitted on, and a sentence saying which.

    1. ``baseline_fasta=PATH`` (or a list of paths) when given (all its contigs);
    2. else the model's own training genome (recorded in the exported model), when its files exist here:
       model and Markov then learned from the same genome and both face the new one;
    3. else the evaluated genome outside the evaluated regions/contigs."""
    from pathlib import Path

    from genossm.data.genome import fasta_paths
    from genossm.data.windows import open_tokens, subtract_intervals

    cap = cfg.baselines.get("max_train_bases")
    if cfg.get("baseline_fasta"):
        fasta_paths(cfg.baseline_fasta)  # the error names a missing file
    path = fasta_value(cfg.get("baseline_fasta") or model_extra.get("fasta") or "")
    paths = [path] if isinstance(path, str) else path
    if path and all(Path(p).exists() for p in paths):
        cache = open_tokens(path, cfg.get("cache_dir"))
        how = ("given baseline_fasta" if cfg.get("baseline_fasta") else "the model's training genome") + f" {' + '.join(paths)}"
        ivs = [(n, 0, cache.lengths[n]) for n in cache.contig_names]
    else:
        cache = eval_cache
        everything = [(n, 0, l) for n, l in eval_cache.all_lengths.items()]
        ivs = subtract_intervals(everything, eval_ivs)
        if not ivs:
            raise GenossmError(
                "no bases to fit the Markov baseline on: the model's training genome is not available here and the "
                "whole evaluated genome is being scored; set baseline_fasta=PATH (or baselines.enabled=false)")
        cache = open_tokens(eval_cache.paths, cfg.get("cache_dir"), contigs=sorted({c for c, _, _ in ivs}))
        how = f"the rest of {eval_cache.fasta} (bases outside the evaluated regions)"
    seqs, total = [], 0
    for contig, start, end in ivs:
        if cap is not None and total >= cap:
            break
        if cap is not None:
            end = min(end, start + cap - total)
        seqs.append(cache.tokens(contig, start, end)[0])
        total += end - start
    return seqs, how


def run_evaluation(cfg) -> dict:
    """Bits per base and accuracy of ``pretrained`` on ``fasta`` (one FASTA or a list; contigs / BED regions),
    beside the baselines."""
    import json
    from pathlib import Path

    from omegaconf import OmegaConf

    from genossm.config import prepare_run
    from genossm.data.genome import fasta_paths
    from genossm.data.windows import TiledWindows, open_tokens
    from genossm.errors import atomic_write
    from genossm.models import from_pretrained, load_extra
    from genossm.tasks.baselines import baseline_report

    if not cfg.get("pretrained"):
        raise GenossmError("pretrained=PATH is required: an exported model folder or a .ckpt")
    if not Path(str(cfg.pretrained)).exists():
        raise GenossmError(f"pretrained={cfg.pretrained}: not found")
    if not cfg.get("fasta"):
        raise GenossmError("fasta=PATH is required: the genome to evaluate on (or fasta=[PATH,PATH,...])")
    fasta_paths(cfg.fasta)  # each file exists (the error names the missing one)
    fasta = fasta_value(cfg.fasta)
    if cfg.get("output") is None:
        raise GenossmError("output= is not set: give a folder for the results")
    prepare_run(cfg)
    out = Path(str(cfg.output)).absolute()

    model = from_pretrained(cfg.pretrained)
    extra = load_extra(cfg.pretrained)
    window_len = int(cfg.window_len or extra.get("train_window_len") or 1024)
    contigs = cfg.get("contigs")
    contigs = OmegaConf.to_container(contigs) if OmegaConf.is_config(contigs) else contigs
    cache = open_tokens(fasta, cfg.get("cache_dir"), contigs=contigs)
    ivs = _eval_intervals(cache, contigs, cfg.get("regions"))
    windows = TiledWindows(cache, ivs, window_len, int(cfg.batch_size), seed=int(cfg.seed),
                           max_n_fraction=float(cfg.max_n_fraction), rank=0, world_size=1,
                           max_windows=cfg.get("max_windows"))
    if len(windows.tiles) == 0:
        raise GenossmError(f"{cache.fasta}: no window to evaluate (all regions too short or mostly N)")

    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    task = MaskedLM(model_config=model.config.to_dict(), mask_prob=float(cfg.mask_prob), seed=int(cfg.seed),
                    model=model).to(device).eval()
    metric = BitsPerBase().to(device)
    seqs = []
    with torch.no_grad():
        for p in range(int(cfg.passes)):
            for index, batch in enumerate(windows):
                if p == 0:
                    seqs.extend(t[v].numpy() for t, v in zip(batch["tokens"], batch["valid"]))
                batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
                out_step = task.shared_step(batch, "test", index + p * 1_000_003)
                metric.update(out_step["nll"], out_step["weight"], out_step["correct"])
    values = {k: float(v) for k, v in metric.compute().items()}

    result = {"pretrained": str(cfg.pretrained), "fasta": fasta, "regions": cfg.get("regions"),
              "contigs": contigs, "window_len": window_len, "n_windows": int(len(windows.tiles)),
              "bases_in_windows": int(sum(len(s) for s in seqs)), "model": values, "baselines": None}
    if cfg.baselines.enabled:
        train_seqs, how = _baseline_training_bases(cfg, extra, cache, ivs)
        base = baseline_report(train_seqs, seqs, max_order=int(cfg.baselines.max_order),
                               pseudocount=float(cfg.baselines.pseudocount))
        base["fitted_on"] = how
        result["baselines"] = base

    rows = [("model", values["bpb"], values["acc"], int(values["n_bases"]))]
    if result["baselines"]:
        b = result["baselines"]
        rows.append(("composition entropy (order 0)", b["composition_entropy"], float("nan"), b["n_bases"]))
        for k, v in b["markov"].items():
            rows.append((f"Markov order {k}", v, float("nan"), b["n_bases"]))
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "evaluation.json", "w") as handle:
        json.dump(result, handle, indent=2)
    with atomic_write(out / "evaluation.tsv", "w") as handle:
        handle.write("predictor\tbits_per_base\taccuracy\tn_bases\n")
        for name, bpb, acc, n in rows:
            handle.write(f"{name}\t{bpb:.6f}\t{'' if acc != acc else f'{acc:.6f}'}\t{n}\n")

    print(f"\n{cfg.pretrained} on {cache.fasta}: {result['n_windows']} window(s) of {window_len:,} bases")
    print(f"{'predictor':<32}{'bits/base':>10}{'accuracy':>10}{'bases':>12}")
    for name, bpb, acc, n in rows:
        print(f"{name:<32}{bpb:>10.4f}{('' if acc != acc else f'{acc:.4f}'):>10}{n:>12,}")
    if result["baselines"]:
        print(f"(model: masked positions, {cfg.mask_prob:.0%} of bases x {cfg.passes} pass(es); "
              f"baselines: every base of the same windows; Markov fitted on {result['baselines']['fitted_on']})")
    print(f"written: {out / 'evaluation.tsv'} and evaluation.json")
    return result
