"""Region task pieces: k-mer features, linear models, metrics against hand computations, RC invariance, save/load."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from genossm.data import tokenizer as tok
from genossm.models import BiMambaLM
from genossm.cli import load_workflow
from genossm.models import load_region_model, save_region_model
from genossm.tasks.baselines import fit_linear, kmer_baseline, kmer_features
from genossm.tasks.metrics import compute_metrics
from genossm.tasks.regions import RegionModel, embed_regions

from helpers import tiny_lm

embed_variable = load_workflow("embed").embed_sequences


def tiny(rc_equivariant: bool = True, seed: int = 0) -> BiMambaLM:
    return tiny_lm(seed, rc_equivariant=rc_equivariant)


def test_kmer_features_equal_naive_counts():
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGTN"), size=30, p=[0.24] * 4 + [0.04])) for _ in range(5)]
    tokens = torch.from_numpy(np.stack([tok.encode(s) for s in seqs]).astype(np.int64))
    valid = torch.ones_like(tokens, dtype=torch.bool)
    valid[0, :5] = False  # padding-like positions are skipped
    for k, canonical in ((1, False), (3, False), (2, True)):
        feats = kmer_features(tokens, valid, k, canonical)
        kmers = ["".join(p) for p in itertools.product("ACGT", repeat=k)]
        for i, s in enumerate(seqs):
            usable = s if i else "N" * 5 + s[5:]
            counts = {m: 0 for m in kmers}
            for j in range(len(usable) - k + 1):
                m = usable[j : j + k]
                if "N" not in m:
                    counts[m] += 1
                    if canonical:
                        counts[m.translate(str.maketrans("ACGT", "TGCA"))[::-1]] += 1
            ref = np.array([counts[m] for m in kmers], dtype=float)
            np.testing.assert_allclose(feats[i].numpy(), ref / max(ref.sum(), 1), rtol=1e-6)


def test_logistic_fit_separates_and_folds_exactly():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g) * torch.tensor([1.0, 3.0, 0.5, 1.0, 2.0]) + 4
    y = (x[:, 0] - 4 + 0.5 * (x[:, 1] - 4) > 0).float()
    model = fit_linear(x[:150], y[:150], "binary", 2, x[150:], y[150:])
    acc = ((model.predict(x[150:]) > 0.5).float() == y[150:]).float().mean()
    assert acc > 0.9
    folded = model.folded()
    torch.testing.assert_close(folded(x)[:, 0], model.logits(x)[:, 0], rtol=1e-4, atol=1e-4)
    # multi-class and ridge
    y3 = torch.bucketize(x[:, 0] - 4, torch.tensor([-0.5, 0.5]))
    m3 = fit_linear(x[:150], y3[:150], "multiclass", 3, x[150:], y3[150:])
    assert (m3.predict(x[150:]).argmax(1) == y3[150:]).float().mean() > 0.8
    yr = 2 * x[:, 2] - x[:, 4]
    mr = fit_linear(x[:150], yr[:150], "regression", x_val=x[150:], y_val=yr[150:])
    assert torch.corrcoef(torch.stack([mr.predict(x[150:]), yr[150:]]))[0, 1] > 0.99


def test_kmer_baseline_learns_gc_content():
    rng = np.random.default_rng(1)
    seqs, labels = [], []
    for i in range(160):
        gc = 0.65 if i % 2 else 0.35
        p = [(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]
        seqs.append(rng.choice(4, size=120, p=p))
        labels.append(i % 2)
    tokens = torch.from_numpy(np.stack(seqs)).long()
    valid = torch.ones_like(tokens, dtype=torch.bool)
    splits = np.array(["train"] * 100 + ["val"] * 30 + ["test"] * 30)
    _, scores = kmer_baseline(tokens, valid, torch.tensor(labels).float(), splits, "binary", k=2)
    m = compute_metrics("binary", scores[130:], torch.tensor(labels[130:]).float())
    assert m["auroc"] > 0.95


def mann_whitney_auc(s, y):
    pos, neg = s[y == 1], s[y == 0]
    return np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])


def test_metrics_match_hand_computations():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 80)
    s = np.clip(0.3 * y + rng.random(80) * 0.7, 0, 1).round(2)
    m = compute_metrics("binary", torch.tensor(s), torch.tensor(y).float())
    assert m["auroc"] == pytest.approx(mann_whitney_auc(s, y), abs=1e-6)
    pred = s > 0.5  # torchmetrics thresholds strictly (the rounded scores include a tie at 0.5)
    tp, tn = np.sum(pred & (y == 1)), np.sum(~pred & (y == 0))
    fp, fn = np.sum(pred & (y == 0)), np.sum(~pred & (y == 1))
    mcc = (tp * tn - fp * fn) / np.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    assert m["mcc"] == pytest.approx(mcc, abs=1e-5)
    assert m["accuracy"] == pytest.approx((tp + tn) / 80, abs=1e-6)
    # average precision: mean of precision at each positive, scores without ties
    s2 = rng.random(80)
    order = np.argsort(-s2)
    hits = y[order]
    ap = np.sum(np.cumsum(hits) / np.arange(1, 81) * hits) / hits.sum()
    assert compute_metrics("binary", torch.tensor(s2), torch.tensor(y).float())["auprc"] == pytest.approx(ap, abs=1e-5)
    yr, pr = rng.normal(size=50), rng.normal(size=50)
    pr = pr + yr
    mr = compute_metrics("regression", torch.tensor(pr), torch.tensor(yr))
    assert mr["pearson"] == pytest.approx(np.corrcoef(pr, yr)[0, 1], abs=1e-5)
    ranks = lambda v: np.argsort(np.argsort(v))  # noqa: E731  (continuous values: no ties)
    assert mr["spearman"] == pytest.approx(np.corrcoef(ranks(pr), ranks(yr))[0, 1], abs=1e-5)
    assert compute_metrics("binary", torch.rand(5), torch.ones(5))["auroc"] is None  # one class: undefined


@pytest.mark.parametrize("rc_equivariant", [True, False])
def test_embeddings_are_rc_invariant(rc_equivariant):
    model = tiny(rc_equivariant).eval()
    tokens = torch.randint(0, 4, (3, 40))
    valid = torch.ones_like(tokens, dtype=torch.bool)
    with torch.no_grad():
        a = model.embed(tokens, pooling="mean", valid=valid, rc_invariant=True)
        b = model.embed(tok.reverse_complement(tokens), pooling="mean", valid=valid, rc_invariant=True)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    if not rc_equivariant:  # the strand average is what makes it invariant
        with torch.no_grad():
            assert not torch.allclose(model.embed(tokens), model.embed(tok.reverse_complement(tokens)), atol=1e-4)


def test_embed_variable_without_padding_equals_one_by_one():
    model = tiny().eval()
    rng = np.random.default_rng(3)
    seqs = [rng.integers(0, 4, n).astype(np.uint8) for n in (30, 17, 30, 5)]
    emb = embed_variable(model, seqs, batch_size=2)
    for i, s in enumerate(seqs):
        t = torch.from_numpy(s.astype(np.int64))[None]
        torch.testing.assert_close(emb[i], embed_regions(model, t, torch.ones_like(t, dtype=torch.bool))[0])


def test_head_mode_freezes_backbone_and_save_load_round_trip(tmp_path):
    backbone = tiny()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    module = RegionModel(backbone, "multiclass", 3, method="head", lr=0.05)
    opt = module.configure_optimizers()
    tokens = torch.randint(0, 4, (8, 24))
    valid = torch.ones_like(tokens, dtype=torch.bool)
    loss = module.loss(module(tokens, valid), torch.randint(0, 3, (8,)))
    loss.backward()
    opt.step()
    for k, v in backbone.state_dict().items():
        torch.testing.assert_close(v, before[k])
    save_region_model(tmp_path / "m", module.backbone, module.head, {"task": "multiclass", "classes": ["a", "b", "c"], "pooling": "mean", "region_len": 24})
    loaded_backbone, head, meta = load_region_model(tmp_path / "m")
    assert meta["classes"] == ["a", "b", "c"] and meta["n_outputs"] == 3
    torch.testing.assert_close(head(embed_regions(loaded_backbone, tokens, valid)), module.predict_logits(tokens, valid))


def _mcc(called, y):
    tp = float(((called == 1) & (y == 1)).sum()); tn = float(((called == 0) & (y == 0)).sum())
    fp = float(((called == 1) & (y == 0)).sum()); fn = float(((called == 0) & (y == 1)).sum())
    denom = ((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)) ** 0.5
    return (tp * tn - fp * fn) / denom if denom else 0.0


@pytest.mark.parametrize("seed", range(5))
def test_chosen_threshold_maximises_mcc_against_every_cut(seed):
    from genossm.tasks.metrics import choose_threshold

    rng = np.random.default_rng(seed)
    y = rng.random(60) < 0.3
    scores = np.round(rng.random(60) * 0.4 + 0.5 * y, 2)  # ties included
    best = max(_mcc((scores > t).astype(int), y.astype(int)) for t in np.r_[scores, scores.min() - 1])
    threshold = choose_threshold(torch.tensor(scores), torch.tensor(y).float())
    assert _mcc((scores > threshold).astype(int), y.astype(int)) == pytest.approx(best)
    m = compute_metrics("binary", torch.tensor(scores).float(), torch.tensor(y).float(), threshold=threshold)
    assert m["mcc"] == pytest.approx(best, abs=1e-5) and m["threshold"] == pytest.approx(threshold)
    assert m["accuracy"] == pytest.approx(float(((scores > threshold) == y).mean()), abs=1e-6)


def test_threshold_is_never_chosen_on_the_test_split():
    from genossm.tasks.metrics import decision_threshold, metrics_by_split

    rng = np.random.default_rng(0)
    n = 400
    y = torch.tensor(rng.random(n) < 0.4).float()
    scores = torch.tensor(np.clip(rng.normal(0.3 + 0.3 * y.numpy(), 0.15), 0, 1)).float()
    splits = np.array(["train"] * 100 + ["val"] * 200 + ["test"] * 100)
    threshold, source = decision_threshold(scores, y, splits)
    assert source == "val"  # 200 validation regions, 20+ of each class: enough alone
    flipped = y.clone()
    flipped[300:] = 1 - flipped[300:]  # whatever the test labels say
    assert decision_threshold(scores, flipped, splits) == (threshold, "val")
    by_split = metrics_by_split("binary", scores, y, splits)
    assert {m["threshold"] for m in by_split.values()} == {threshold}
    small = np.array(["train"] * 300 + ["val"] * 40 + ["test"] * 60)
    assert decision_threshold(scores, y, small)[1] == "train+val"
