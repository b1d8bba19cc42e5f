"""What the workflows write: tables (TSV/CSV/parquet), JSON, the region columns and scores, text reports (the
scored VCF is :mod:`genossm.tasks.variant_outputs`'s, the plots :mod:`genossm.tasks.plots`').

Every writer is atomic (a temporary file beside the target, renamed when complete), so an output is never
half-written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from genossm.atomic import atomic_path, atomic_write


def write_table(df: pd.DataFrame, path, float_format: str | None = None) -> Path:
    """Write ``df`` atomically as TSV (``.tsv``, ``.txt``, ``.tsv.gz``), parquet or CSV by suffix; the text
    formats write floats with ``float_format`` (e.g. ``"%.6f"``) when given."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".parquet"):
        with atomic_path(path, ".parquet") as tmp:
            df.to_parquet(tmp, index=False)
    elif name.endswith((".csv", ".csv.gz")):
        with atomic_path(path, ".csv.gz" if name.endswith(".gz") else ".csv") as tmp:
            df.to_csv(tmp, index=False, float_format=float_format)
    else:
        with atomic_path(path, ".tsv.gz" if name.endswith(".gz") else ".tsv") as tmp:
            df.to_csv(tmp, sep="\t", index=False, float_format=float_format)
    return path


def write_json(obj, path) -> Path:
    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=2)
        fh.write("\n")
    return Path(path)


def score_columns(scores: torch.Tensor, task: str, classes: list[str] | None, suffix: str = "",
                  threshold: float | None = None) -> dict:
    """Columns for a predictions table: ``score`` (binary; with ``threshold``, the model's validation-chosen
    decision threshold, also ``pred``: the class called), ``prob_<class>`` + ``pred`` (multi-class), ``pred``."""
    s = scores.detach().cpu().numpy()
    if task == "binary":
        cols = {f"score{suffix}": s}
        if threshold is not None and classes:
            cols[f"pred{suffix}"] = np.asarray(classes, dtype=object)[(s > threshold).astype(int)]
        return cols
    if task == "multiclass":
        cols = {f"prob_{c}{suffix}": s[:, k] for k, c in enumerate(classes)}
        cols[f"pred{suffix}"] = np.asarray(classes, dtype=object)[s.argmax(1)]
        return cols
    return {f"pred{suffix}": s}


def input_columns(regions) -> pd.DataFrame:
    """The identifying columns of every region (name, chrom, start, end, strand), in input order."""
    t = regions.table
    cols = ["name", "chrom", "start", "end", "strand"] if regions.has_coords else ["name"]
    return t[cols].reset_index(drop=True).copy()


def format_metrics(metrics: dict, split: str = "test") -> str:
    """A small text table: one row per method, the metrics of one split."""
    rows = []
    keys = ("auroc", "auprc", "mcc", "accuracy") if metrics["task"] != "regression" else ("pearson", "spearman", "mse")
    rows.append(f"{'method':<10}" + "".join(f"{k:>10}" for k in keys) + f"   ({split} split)")
    binary = metrics["task"] == "binary"
    first = next(iter(metrics["methods"].values()), {}).get(split, {})
    n = f", n={first['n']}" if first.get("n") is not None else ""
    rows[0] = rows[0].replace(f"   ({split} split)", f"   ({split} split{n})")
    if binary:
        source = {"val": "the validation split", "train+val": "the train and validation splits (the validation split "
                  "alone is too small)"}.get(first.get("threshold_from"), "default")
        rows[0] = rows[0].replace(f"   ({split} split{n})", f"{'threshold':>11}   ({split} split{n}; MCC and accuracy "
                                  f"at the threshold chosen on {source})")
    for name, by_split in metrics["methods"].items():
        m = by_split.get(split, {})
        row = f"{name:<10}" + "".join(f"{m[k]:>10.3f}" if m.get(k) is not None else f"{'-':>10}" for k in keys)
        rows.append(row + (f"{m['threshold']:>11.3f}" if binary and m.get("threshold") is not None else ""))
    verdict = _finetune_verdict(metrics, split)
    return "\n".join(rows + ([verdict] if verdict else []))


def _finetune_verdict(metrics: dict, split: str) -> str:
    """One line saying whether the trained model beat the linear probe (and the k-mer baseline) on ``split``."""
    methods = metrics["methods"]
    trained = next((m for m in ("finetune", "head") if m in methods), None)
    key = "auroc" if metrics["task"] != "regression" else "pearson"
    mine = methods.get(trained, {}).get(split, {}).get(key) if trained else None
    if mine is None:
        return ""
    beaten, not_beaten = [], []
    for other in ("probe", "kmer"):
        theirs = methods.get(other, {}).get(split, {}).get(key)
        if theirs is not None:
            (beaten if mine > theirs else not_beaten).append(f"{other} {theirs:.3f}")
    if not_beaten:
        return (f"{trained} did NOT beat {', '.join(not_beaten)} on the {split} split ({key} {mine:.3f}); "
                "consider method=probe, more data, or another pretrained model")
    return f"{trained} beats {', '.join(beaten)} on the {split} split ({key} {mine:.3f})" if beaten else ""


def _num(x, digits: int = 4) -> str:
    """``x`` to ``digits`` decimals; empty for a missing value (None or NaN)."""
    return f"{x:.{digits}f}" if x is not None and x == x else ""


def _pm(se) -> str:
    return f" ± {_num(se)}" if _num(se) else ""


def markov_verdict(model: dict, base: dict) -> str:
    """Whether the model beats the composition entropy and, in its own clause, the best Markov model, with the
    margin in standard errors (over windows): a margin under two standard errors is reported as within the
    noise. (One clause for both read "does NOT beat the composition entropy and the best Markov model" when the
    model beat the Markov model.)"""
    bpb = float(model["bpb"])
    comp = float(base["composition_entropy"])
    first = f"{'beats' if bpb < comp else 'does NOT beat'} the composition entropy ({bpb:.4f} vs {comp:.4f})"
    diff = base["best_markov"] - bpb
    ses = [x for x in (model.get("bpb_se"), base.get("best_markov_se")) if x is not None and x == x]
    se = math.sqrt(sum(x * x for x in ses)) if ses else float("nan")
    margin = f"by {diff:.4f} bits/base" + (f", {diff / se:.1f} standard errors" if se == se and se > 0 else "")
    if se == se and abs(diff) < 2 * se:
        second = f"it is within the noise of the best Markov model ({margin})"
    elif diff > 0:
        second = f"it beats the best Markov model ({margin})"
    else:
        second = f"it does NOT beat the best Markov model ({margin})"
    return f"the model {first}; {second}"


def format_comparison(model, base: dict, label: str = "validation") -> str:
    """The model's bits per base beside the baselines', each with the bases it was scored on and the standard
    error over windows (``model``: the metric dict, or just its bits per base)."""
    model = dict(model) if isinstance(model, dict) else {"bpb": float(model)}
    k_max = max(base["markov"])
    n_model = f"{int(model['n_bases']):,} masked bases" if "n_bases" in model else "masked bases"
    windows = f" in {int(base['n_windows']):,} windows" if base.get("n_windows") else ""
    rows = [
        ("model", model["bpb"], model.get("bpb_se"), f"{n_model}{windows}"),
        ("composition entropy (order 0)", base["composition_entropy"], None, f"{base['n_bases']:,} bases"),
    ]
    if "train_order" in base:
        rows.append((f"Markov order {base['train_order']} (chosen on train)", base["train_markov"], None,
                     f"fitted on {base.get('n_train_bases', 0):,} training bases"))
    rows.append((f"best Markov here (order {base['best_order']}, k <= {k_max})", base["best_markov"],
                 base.get("best_markov_se"), "order chosen on these bases: flatters the baseline"))
    lines = [f"{label} bits per base (± standard error over windows):"]
    for name, value, se, note in rows:
        lines.append(f"  {name:<42} {value:.4f}{_pm(se):<10}  {note}")
    lines.append("  " + markov_verdict(model, base))
    return "\n".join(lines)


def evaluation_rows(result: dict) -> list[tuple[str, float, float, int, float]]:
    """(predictor, bits per base, accuracy, bases, standard error over windows) of the model and of each baseline
    of ``genossm evaluate`` (the standard error is given for the model and the best Markov order)."""
    values = result["model"]
    nan = float("nan")
    rows = [("model", values["bpb"], values["acc"], int(values["n_bases"]), values.get("bpb_se", nan))]
    if result["baselines"]:
        b = result["baselines"]
        rows.append(("composition entropy (order 0)", b["composition_entropy"], nan, b["n_bases"], nan))
        for k, v in b["markov"].items():
            se = b.get("best_markov_se", nan) if int(k) == int(b["best_order"]) else nan
            rows.append((f"Markov order {k}", v, nan, b["n_bases"], se))
    return rows


def write_evaluation_table(rows, path) -> Path:
    """``evaluation.tsv``: one row per predictor, bits per base and accuracy to 6 decimals (accuracy empty for
    the baselines, which only give probabilities), the bases scored and the standard error over windows."""
    table = pd.DataFrame({
        "predictor": [r[0] for r in rows],
        "bits_per_base": [f"{r[1]:.6f}" for r in rows],
        "accuracy": [_num(r[2], 6) for r in rows],
        "n_bases": [int(r[3]) for r in rows],
        "standard_error": [_num(r[4], 6) for r in rows],
    })
    return write_table(table, path)


def print_evaluation(result: dict, rows, cfg, fasta_name, out: Path) -> None:
    print(f"\n{cfg.pretrained} on {fasta_name}: {result['n_windows']} window(s) of {result['window_len']:,} bases")
    print(f"{'predictor':<32}{'bits/base':>10}{'± s.e.':>9}{'accuracy':>10}{'bases':>12}")
    for name, bpb, acc, n, se in rows:
        print(f"{name:<32}{bpb:>10.4f}{_num(se):>9}{_num(acc):>10}{n:>12,}")
    base = result["baselines"]
    if base:
        print(f"(model: masked positions, {cfg.mask_prob:.0%} of bases x {cfg.passes} pass(es); "
              f"baselines: every base of the same windows; Markov fitted on {base['fitted_on']}; "
              f"standard errors over windows)")
        print(f"Markov order chosen on the training bases: {base['train_order']} ({base['train_markov']:.4f}); "
              f"best order on these bases: {base['best_order']} ({base['best_markov']:.4f})")
        print(markov_verdict(result["model"], base))
    print(f"written: {out / 'evaluation.tsv'} and evaluation.json")


