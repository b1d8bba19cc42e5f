"""What the workflows write: tables (TSV/CSV/parquet), JSON, the region columns and scores, text reports (the
scored VCF is :mod:`genossm.tasks.variant_outputs`'s, the plots :mod:`genossm.tasks.plots`').

Every writer is atomic (a temporary file beside the target, renamed when complete), so an output is never
half-written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from genossm.errors import atomic_path, atomic_write


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
                "consider mode=probe, more data, or another pretrained model")
    return f"{trained} beats {', '.join(beaten)} on the {split} split ({key} {mine:.3f})" if beaten else ""


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


def evaluation_rows(result: dict) -> list[tuple[str, float, float, int]]:
    """(predictor, bits per base, accuracy, bases) of the model and of each baseline of ``genossm evaluate``."""
    values = result["model"]
    rows = [("model", values["bpb"], values["acc"], int(values["n_bases"]))]
    if result["baselines"]:
        b = result["baselines"]
        rows.append(("composition entropy (order 0)", b["composition_entropy"], float("nan"), b["n_bases"]))
        for k, v in b["markov"].items():
            rows.append((f"Markov order {k}", v, float("nan"), b["n_bases"]))
    return rows


def write_evaluation_table(rows, path) -> Path:
    """``evaluation.tsv``: one row per predictor, bits per base and accuracy to 6 decimals (accuracy empty for
    the baselines, which only give probabilities)."""
    table = pd.DataFrame({
        "predictor": [r[0] for r in rows],
        "bits_per_base": [f"{r[1]:.6f}" for r in rows],
        "accuracy": ["" if r[2] != r[2] else f"{r[2]:.6f}" for r in rows],
        "n_bases": [int(r[3]) for r in rows],
    })
    return write_table(table, path)


def print_evaluation(result: dict, rows, cfg, fasta_name, out: Path) -> None:
    print(f"\n{cfg.pretrained} on {fasta_name}: {result['n_windows']} window(s) of {result['window_len']:,} bases")
    print(f"{'predictor':<32}{'bits/base':>10}{'accuracy':>10}{'bases':>12}")
    for name, bpb, acc, n in rows:
        print(f"{name:<32}{bpb:>10.4f}{('' if acc != acc else f'{acc:.4f}'):>10}{n:>12,}")
    if result["baselines"]:
        print(f"(model: masked positions, {cfg.mask_prob:.0%} of bases x {cfg.passes} pass(es); "
              f"baselines: every base of the same windows; Markov fitted on {result['baselines']['fitted_on']})")
    print(f"written: {out / 'evaluation.tsv'} and evaluation.json")


