import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

from genossm.data.tokenizer import MASK, N, NUM_BASES, PAD
from genossm.data.datamodule import WindowLenSchedule
from genossm.tasks.metrics import BitsPerBase, ratio_standard_error
from genossm.tasks.pretrain import MaskedLM, choose_targets, corrupt, make_generator


class Lookup(nn.Module):
    """Stand-in model with known logits: logits[b, t] = table[input[b, t]] (no context)."""

    def __init__(self, bidirectional=True):
        super().__init__()
        self.config = SimpleNamespace(bidirectional=bidirectional)
        self.table = nn.Embedding(8, NUM_BASES)
        with torch.no_grad():
            self.table.weight.copy_(torch.arange(32, dtype=torch.float32).reshape(8, 4).sin() * 3)

    def forward(self, tokens):
        return self.table(tokens)


def random_batch(B=4, L=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, NUM_BASES, (B, L), generator=g)
    tokens[torch.rand(B, L, generator=g) < 0.1] = N
    valid = torch.ones(B, L, dtype=torch.bool)
    valid[0, L - 7 :] = False
    tokens[~valid] = PAD
    softmask = torch.rand(B, L, generator=g) < 0.3
    return {"tokens": tokens, "valid": valid, "softmask": softmask}


def module(**kw):
    return MaskedLM(model_config={"bidirectional": kw.pop("bidirectional", True)},
                    model=Lookup(), **kw)


def test_masking_statistics():
    batch = random_batch(B=64, L=2000, seed=1)
    tokens, valid = batch["tokens"], batch["valid"]
    gen = make_generator(torch.device("cpu"), 0, "train", 0, 0, 0)
    targets = choose_targets(tokens, valid, 0.15, gen)
    eligible = valid & (tokens < NUM_BASES)
    assert not targets[~eligible].any()  # N and padding never chosen
    frac = targets.sum().item() / eligible.sum().item()
    assert frac == pytest.approx(0.15, abs=0.004)
    inputs = corrupt(tokens, targets, gen)
    assert torch.equal(inputs[~targets], tokens[~targets])  # only targets are touched
    t_in, t_tok = inputs[targets], tokens[targets]
    n = t_in.numel()
    assert (t_in == MASK).sum().item() / n == pytest.approx(0.8, abs=0.01)
    random_changed = ((t_in != MASK) & (t_in != t_tok)).sum().item() / n  # random base differing: 0.1 * 3/4
    assert random_changed == pytest.approx(0.075, abs=0.006)
    assert ((t_in == t_tok).sum().item() / n) == pytest.approx(0.125, abs=0.008)
    assert (t_in[t_in != MASK] < NUM_BASES).all()


def test_loss_equals_hand_computation():
    lm = module()
    batch = random_batch()
    out = lm.shared_step(batch, "train", batch_idx=3)
    inputs, targets = out["inputs"], out["targets"]
    table = lm.model.table.weight.detach()
    total, count = 0.0, 0
    for b in range(inputs.shape[0]):
        for t in range(inputs.shape[1]):
            if targets[b, t]:
                row = table[inputs[b, t]].tolist()
                logz = math.log(sum(math.exp(x) for x in row))
                total += logz - row[batch["tokens"][b, t]]
                count += 1
    assert count > 10
    assert out["loss"].item() == pytest.approx(total / count, rel=1e-5)
    # same step and batch index -> same masks (what exact resume relies on); another step -> others
    again = lm.shared_step(batch, "train", batch_idx=3)
    assert torch.equal(again["targets"], targets) and torch.equal(again["inputs"], inputs)
    other = lm.shared_step(batch, "train", batch_idx=4)
    assert not torch.equal(other["targets"], targets)


def test_softmask_weight():
    lm = module(softmask_weight=0.25)
    batch = random_batch(seed=5)
    out = lm.shared_step(batch, "train", batch_idx=0)
    soft = batch["softmask"][out["targets"]]
    w = torch.where(soft, 0.25, 1.0)
    assert out["loss"].item() == pytest.approx(((out["nll"] * w).sum() / w.sum()).item(), rel=1e-6)
    assert out["loss"].item() != pytest.approx(out["nll"].mean().item(), rel=1e-4)


def test_eval_masks_everything_and_is_fixed():
    lm = module()
    batch = random_batch(B=8, L=400, seed=2)
    a = lm.shared_step(batch, "val", batch_idx=0)
    assert (a["inputs"][a["targets"]] == MASK).all()
    b = lm.shared_step(batch, "val", batch_idx=0)
    assert torch.equal(a["targets"], b["targets"])


def test_metrics_accumulate_exactly():
    m = BitsPerBase()
    nll1, nll2 = torch.tensor([0.5, 1.0]), torch.tensor([2.0])
    m.update(nll1, torch.ones(2), torch.tensor([True, False]))
    m.update(nll2, torch.tensor([0.5]), torch.tensor([True]))
    v = m.compute()
    assert v["nll"].item() == pytest.approx(3.5 / 3)
    assert v["bpb"].item() == pytest.approx(3.5 / 3 / math.log(2))
    assert v["ppl"].item() == pytest.approx(math.exp(3.5 / 3), rel=1e-6)
    assert v["acc"].item() == pytest.approx(2 / 3)
    assert v["loss"].item() == pytest.approx((0.5 + 1.0 + 1.0) / 2.5)


def test_causal_targets_are_next_bases():
    lm = MaskedLM(model_config={"bidirectional": False}, model=Lookup(bidirectional=False))
    batch = random_batch(seed=3)
    inputs, targets, labels = lm.mask_batch(batch, "train", 0)
    tok = batch["tokens"]
    assert torch.equal(inputs, tok)
    expect = (tok[:, 1:] < NUM_BASES) & batch["valid"][:, 1:] & batch["valid"][:, :-1]
    assert torch.equal(targets[:, :-1], expect) and not targets[:, -1].any()
    assert torch.equal(labels[:, :-1], tok[:, 1:])


def test_lr_schedule_and_weight_decay_groups():
    lm = MaskedLM(model_config={"d_model": 16, "n_layers": 1, "rc_equivariant": False}, lr=1e-2,
                  warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    conf = lm.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert all(p.ndim >= 2 for p in opt.param_groups[0]["params"])
    assert all(p.ndim < 2 or getattr(p, "_no_weight_decay", False) for p in opt.param_groups[1]["params"])
    lrs = []
    for _ in range(110):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-3) and lrs[9] == pytest.approx(1e-2)
    assert lrs[60] == pytest.approx(1e-2 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))))
    assert lrs[-1] == pytest.approx(1e-3, rel=0.01)


def test_seq_len_warmup_schedule():
    schedule = WindowLenSchedule.from_config({"start_len": 256, "growth": 2, "epochs_per_stage": 2})
    assert [schedule.window_len(e, 1500) for e in range(8)] == [256, 256, 512, 512, 1024, 1024, 1500, 1500]
    assert WindowLenSchedule.from_config(None) is None  # no warm-up: window_len throughout


def test_standard_error_over_windows_matches_hand_computation():
    # windows of equal size: the delta-method standard error is the plain standard error of the window means
    m = BitsPerBase()
    nll = torch.tensor([1.0, 3.0, 2.0, 2.0, 0.5, 1.5]) * math.log(2)  # bits 1,3 | 2,2 | 0.5,1.5
    window = torch.tensor([0, 0, 1, 1, 2, 2])
    m.update(nll[:4], torch.ones(4), torch.ones(4, dtype=torch.bool), window=window[:4], n_windows=2)
    m.update(nll[4:], torch.ones(2), torch.ones(2, dtype=torch.bool), window=window[4:] - 2, n_windows=1)
    v = m.compute()
    means = np.array([2.0, 2.0, 1.0])
    assert v["bpb"].item() == pytest.approx(means.mean())
    assert v["bpb_se"].item() == pytest.approx(means.std(ddof=1) / math.sqrt(3), rel=1e-6)
    assert v["n_windows"].item() == 3
    # unequal windows: sum of squared residuals of the ratio estimator, by hand
    sums, counts = torch.tensor([4.0, 1.0, 6.0]), torch.tensor([2.0, 1.0, 4.0])
    r = 11.0 / 7.0
    hand = math.sqrt(((4 - 2 * r) ** 2 + (1 - r) ** 2 + (6 - 4 * r) ** 2) / (3 * 2)) / (7.0 / 3)
    assert ratio_standard_error(sums, counts) == pytest.approx(hand)
    assert math.isnan(ratio_standard_error(torch.tensor([1.0]), torch.tensor([2.0])))


def test_validation_logs_a_standard_error_per_window():
    lm = MaskedLM(model_config={}, model=Lookup())
    batch = random_batch(seed=5)
    lm._eval_step(batch, 0, "val")
    v = lm.metrics["val"].compute()
    assert v["n_windows"].item() == batch["tokens"].shape[0] and v["bpb_se"].item() > 0
