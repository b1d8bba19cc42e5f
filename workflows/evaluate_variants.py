"""genossm evaluate-variants: how well variant scores predict labels, beside baselines scored on the same
variants. See ``conf/evaluate_variants.yaml`` for the options and :mod:`genossm.tasks.variant_metrics` for the
metrics.

compose (Hydra) -> read the labelled variants (labels, match groups, the user's score columns and categories)
-> the model's scores: an earlier ``score-variants`` file joined by allele, or scored now by the score-variants
run itself -> the baselines on the same alleles (the reference genome's Markov LLR, the indel length) -> the
metrics with bootstrap intervals, overall and by stratum -> write ``metrics.tsv``, ``metrics.json``,
``scores.tsv``, the plot and ``config.yaml`` into ``output``, and print the table and its verdict.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from genossm.config import save_config
from genossm.errors import GenossmError
from genossm.options import BaselineOptions, RunOptions, group, size
from genossm.paths import conf_dir
from genossm.workflows import load_workflow, user_errors

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from genossm.data.genome import Genome
    from genossm.data.variant_labels import LabelledVariants

# numpy, pandas, torch and the scoring modules are imported inside the functions that use them: the run says
# what it does (its first log line) before it loads them

log = logging.getLogger("genossm.evaluate_variants")

DIRECTIONS = ("damaging", "benign", "both")
MODEL = "genossm_llr"
# genossm's scores and the baselines that share their meaning: +1 when a higher raw value is the damaging end
DAMAGING_SIGN = {"genossm_llr": -1, "genossm_emb_dist": +1, "markov_llr": -1, "indel_length": +1}


@dataclasses.dataclass
class EvaluateVariantsOptions(RunOptions):
    """The options of ``genossm evaluate-variants`` (``conf/evaluate_variants.yaml``), checked when made."""

    variants: str | None = None
    """VCF/BCF/TSV of the labelled variants (TSV: chrom, pos, ref, alt and the columns below)."""
    label: str = "label"
    """The label: a TSV column or a VCF INFO key; binary (0/1, true/false) or real-valued."""
    label_type: str = "auto"
    """``auto`` (binary when every label is 0 or 1), ``binary`` or ``regression``."""
    label_threshold: float | None = None
    """A number: binary labels from a numeric column, 1 on the ``positive`` side of it."""
    positive: str = "above"
    """``above`` (label >= label_threshold is 1) or ``below`` (label < label_threshold is 1)."""
    match_group: str | None = None
    """The column of matched-control groups (each with a positive), resampled as units."""
    scores: list[str] = dataclasses.field(default_factory=list)
    """Score columns you bring (CADD, phyloP, another model's), higher = the positive end (``-NAME``: lower)."""
    stratify: list[str] = dataclasses.field(default_factory=list)
    """Categorical columns to break the metrics down by (variant kind and chromosome always)."""
    direction: str = "damaging"
    """Which end of genossm's scores predicts the positive label: ``damaging``, ``benign`` or ``both``."""
    scored: str | None = None
    """Scores from an earlier score-variants run (its table or VCF), joined by contig, pos, ref, alt."""
    pretrained: str | None = None
    """Or a model to score the variants now (folder, ``.ckpt``, ``bundled:NAME``, ``hf:ORG/NAME``)."""
    fasta: str | None = None
    """The reference genome (the Markov baseline is fitted on it; the model scores against it)."""
    output: str | None = None
    """The folder ``metrics.tsv``, ``metrics.json``, ``scores.tsv``, the plot and ``config.yaml`` go to."""
    bootstrap: int = 1000
    """Resamples for the 95 % intervals (0: none; else at least 100)."""
    window_len: int | None = size(None, null=True)
    """As score-variants' (default: the model's train_window_len or 2048, whichever is smaller)."""
    alleles_per_batch: int = size(16)
    """As score-variants'."""
    strands: str = "auto"
    """As score-variants'."""
    indel_flank: int = size(8, minimum=0)
    """As score-variants'."""
    tokens_per_forward: int | None = size(None, null=True)
    """As score-variants'."""
    num_workers: int = size(0, minimum=0)
    """As score-variants'."""
    cache_dir: str | None = None
    """Where FASTA indexes go when the FASTA's folder is read-only."""
    progress: bool = True
    """Show score-variants' progress bar."""
    baselines: BaselineOptions = group(BaselineOptions, max_train_bases=20_000_000)
    """The Markov model: its order is chosen (<= max_order) on the reference's own bases, fitted on at most
    max_train_bases bases of the variants' contigs."""

    def describe(self) -> str:
        """One line saying what the run evaluates (the run's first log line)."""
        scores = f"the scores in {self.scored}" if self.scored else f"the model {self.pretrained}"
        return (f"evaluate-variants: {scores} against the labels ({self.label}) of {self.variants}, "
                f"writing {self.output}")


def signed_name(name: str, sign: int) -> str:
    """A predictor's name as evaluated: ``-genossm_llr`` is the negated LLR (high = alt much less likely)."""
    return name if sign > 0 else f"-{name}"


def _labels(labelled: LabelledVariants, opts: EvaluateVariantsOptions) -> tuple[np.ndarray, str, str]:
    """(labels, task: binary | regression, a phrase saying what the label is)."""
    import numpy as np

    label_type = str(opts.label_type)
    if label_type not in ("auto", "binary", "regression"):
        raise GenossmError(f"label_type must be auto, binary or regression, got {label_type!r}")
    values = labelled.numbers(opts.label, "label", allow_missing=False)
    if opts.label_threshold is not None:
        if label_type == "regression":
            raise GenossmError("label_threshold= makes binary labels; it cannot go with label_type=regression")
        side = str(opts.positive)
        if side not in ("above", "below"):
            raise GenossmError(f"positive must be above or below (label_threshold's positive side), got {side!r}")
        threshold = float(opts.label_threshold)
        y = (values >= threshold) if side == "above" else (values < threshold)
        what = f"{opts.label} {'>=' if side == 'above' else '<'} {threshold:g}"
        return y.astype(np.float64), "binary", what
    zero_one = np.isin(values, (0.0, 1.0))
    if label_type == "binary" and not zero_one.all():
        bad = int(np.flatnonzero(~zero_one)[0])
        raise GenossmError(f"{labelled.where(bad)}: label {values[bad]:g} (column {opts.label}) is not 0 or 1, and "
                           "label_type=binary; use label_threshold= to make binary labels from a number")
    task = "binary" if label_type == "binary" or (label_type == "auto" and zero_one.all()) else "regression"
    return values, task, f"{opts.label}, " + ("binary" if task == "binary" else "real-valued")


def _check_groups(labelled: LabelledVariants, column: str, groups: np.ndarray, y: np.ndarray, task: str) -> None:
    """Every match group holds a positive (a control set without its case is not a matched comparison)."""
    import numpy as np
    import pandas as pd

    missing = np.flatnonzero(groups == ".")
    if len(missing):
        raise GenossmError(f"{labelled.where(int(missing[0]))}: no match group (column {column} is empty)")
    if task != "binary":
        return
    frame = pd.DataFrame({"g": groups, "y": y, "row": np.arange(len(y))})
    positives = frame.groupby("g", sort=False)["y"].sum()
    empty = positives.index[positives.to_numpy() == 0]
    if len(empty):
        first = int(frame.loc[frame["g"] == empty[0], "row"].iloc[0])
        more = f" (and {len(empty) - 1:,} more groups)" if len(empty) > 1 else ""
        raise GenossmError(f"{labelled.where(first)}: match group {empty[0]!r} (column {column}) has no positive "
                           f"variant{more}; each group of matched controls needs its case")


def _model_scores(opts: EvaluateVariantsOptions, cfg: DictConfig, labelled: LabelledVariants,
                  out: Path) -> tuple[dict[str, np.ndarray], str]:
    """genossm's ``llr`` and ``emb_dist`` of every labelled allele, and a phrase saying where they came from."""
    import pandas as pd

    from genossm.data.variant_labels import join_scores, read_scored
    from genossm.tasks.trainer import build_trainer

    if opts.scored:
        table, name = read_scored(opts.scored)
        return join_scores(labelled, table, name), f"scores read from {opts.scored}"
    scoring = load_workflow("score-variants")
    trainer = build_trainer(cfg, default_root_dir=None, enable_progress_bar=False, enable_checkpointing=False,
                            enable_model_summary=False)
    scored_path = out / "scored.tsv"
    started = time.perf_counter()
    # the options both workflows have mean the same in both (output: here the folder, there the scored table)
    shared = scoring.OPTION_NAMES & {f.name for f in dataclasses.fields(opts)} - {"output"}
    scoring.score_variants(output=scored_path, trainer=trainer, **{name: getattr(opts, name) for name in shared})
    table = pd.read_csv(scored_path, sep="\t", keep_default_na=False, na_values=[""])
    if len(table) != len(labelled.table) or not (table["pos"].to_numpy() == labelled.table["pos"].to_numpy()).all():
        raise RuntimeError(f"{scored_path} does not hold the alleles of {opts.variants} in order")
    seconds = time.perf_counter() - started
    return ({"llr": table["llr"].to_numpy(dtype=float), "emb_dist": table["emb_dist"].to_numpy(dtype=float)},
            f"scored now by {opts.pretrained} in {seconds:.0f} s ({scored_path.name})")


def _markov(opts: EvaluateVariantsOptions, genome: Genome, labelled: LabelledVariants) -> tuple[np.ndarray, dict]:
    """The reference genome's Markov LLR of every allele, and what it was fitted on."""
    from genossm.tasks.baselines.markov import fit_chosen_order, markov_variant_scores, reference_bases

    contigs = list(dict.fromkeys(labelled.table["chrom"].astype(str)))
    cap = opts.baselines.max_train_bases
    seqs, n_bases = reference_bases(genome, contigs, None if cap is None else int(cap))
    if n_bases < 1000:
        raise GenossmError(f"{opts.fasta}: only {n_bases:,} A/C/G/T bases to fit the Markov baseline on")
    started = time.perf_counter()
    model, order = fit_chosen_order(seqs, int(opts.baselines.max_order), float(opts.baselines.pseudocount))
    scores, reasons = markov_variant_scores(model, order, genome, labelled.alleles)
    info = {"order": int(order), "max_order": int(opts.baselines.max_order), "fitted_on_bases": int(n_bases),
            "fasta": str(opts.fasta), "not_scored": reasons, "seconds": time.perf_counter() - started}
    return scores, info


def _predictors(raw: dict[str, np.ndarray], user: list[tuple[str, int]], direction: str) -> dict[str, tuple[str, int]]:
    """{name as evaluated: (raw column, sign)}: genossm's scores and the baselines oriented by ``direction``,
    the user's columns as given (``-NAME`` flipped); ``direction=both`` adds every one with the other sign."""
    out = {}
    for name in raw:
        if name in DAMAGING_SIGN:
            sign = DAMAGING_SIGN[name] * (-1 if direction == "benign" else 1)
        else:
            sign = dict(user)[name]
        out[signed_name(name, sign)] = (name, sign)
        if direction == "both":
            out[signed_name(name, -sign)] = (name, -sign)
    return out


def _strata(labelled: LabelledVariants, stratify: list[str]) -> dict[str, np.ndarray]:
    strata = {"kind": labelled.table["kind"].to_numpy(dtype=object),
              "chrom": labelled.table["chrom"].astype(str).to_numpy(dtype=object)}
    for column in stratify:
        strata[column] = labelled.strings(column)
    return strata


def evaluate_variants(cfg: DictConfig) -> dict:
    """Metrics of genossm's variant scores and the baselines against the labels of ``variants``."""
    opts = EvaluateVariantsOptions.from_config(cfg)
    if not opts.variants:
        raise GenossmError("variants= is required: a VCF, BCF or TSV of labelled variants")
    if not opts.fasta:
        raise GenossmError("fasta= is required: the reference genome (the Markov baseline is fitted on it)")
    if bool(opts.scored) == bool(opts.pretrained):
        raise GenossmError("give either scored=FILE (the output of score-variants) or pretrained=MODEL (to score the "
                           "variants now), not " + ("both" if opts.scored else "neither"))
    log.info("%s", opts.describe())
    import numpy as np
    import pandas as pd

    from genossm.data.genome import Genome
    from genossm.data.variant_labels import LabelledVariants
    from genossm.tasks import variant_metrics as vm
    from genossm.tasks.outputs import write_json, write_table
    from genossm.tasks.plots import plot_variant_evaluation
    from genossm.tasks.trainer import prepare_run

    started = time.perf_counter()  # the run's seconds, not the imports before it
    direction = str(opts.direction)
    if direction not in DIRECTIONS:
        raise GenossmError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if opts.output is None:
        raise GenossmError("output= is not set: give a folder for the results")
    n_boot = int(opts.bootstrap)
    if n_boot < 0 or 0 < n_boot < 100:
        raise GenossmError(f"bootstrap must be 0 (no intervals) or at least 100 resamples, got {n_boot}")
    user = [(str(s)[1:], -1) if str(s).startswith("-") else (str(s), 1) for s in opts.scores or []]
    stratify = [str(s) for s in opts.stratify or []]
    clash = [name for name, _ in user if name in DAMAGING_SIGN]
    if clash:
        raise GenossmError(f"scores=: {clash[0]!r} is the name of one of genossm's own predictors; rename the column")
    out = Path(str(opts.output)).absolute()
    group_column = opts.match_group

    labelled = LabelledVariants(opts.variants, [opts.label, group_column, *(n for n, _ in user), *stratify])
    if len(labelled.table) == 0:
        raise GenossmError(f"{opts.variants}: no variants")
    y, task, label_text = _labels(labelled, opts)
    reason = vm.defined(task, y)
    if reason:
        raise GenossmError(f"{opts.variants}: the labels ({label_text}) have {reason}: the metrics need "
                           + ("both classes" if task == "binary" else "at least 3 variants and 2 label values"))
    groups = labelled.strings(group_column) if group_column else None
    if groups is not None:
        _check_groups(labelled, group_column, groups, y, task)
    user_raw = {name: labelled.numbers(name, f"score {name}", allow_missing=True) for name, _ in user}
    genome = Genome(opts.fasta, cache_dir=opts.cache_dir)
    prepare_run(cfg, num_workers=int(opts.num_workers))

    # the scores: the model's, the baselines', the user's
    model_raw, scored_text = _model_scores(opts, cfg, labelled, out)
    markov, markov_info = _markov(opts, genome, labelled)
    raw = {"genossm_llr": model_raw["llr"], "genossm_emb_dist": model_raw["emb_dist"], "markov_llr": markov}
    kinds = labelled.table["kind"].to_numpy(dtype=object)
    if np.isin(kinds, ("insertion", "deletion")).any():
        raw["indel_length"] = np.array([abs(len(a) - len(r)) for r, a in zip(labelled.table["ref"], labelled.table["alt"])],
                                       dtype=float)
    raw.update(user_raw)
    notes = []
    for name in list(raw):
        if not np.isfinite(raw[name]).any():
            notes.append(f"{name} has no value for any variant: left out")
            del raw[name]
    if MODEL not in raw:
        raise GenossmError(f"no labelled variant has a genossm score ({scored_text}): nothing to evaluate")
    keep = np.all([np.isfinite(v) for v in raw.values()], axis=0)
    for name, values in raw.items():
        missing = int((~np.isfinite(values)).sum())
        if missing:
            notes.append(f"{missing:,} variant(s) without {name} left out (every predictor is scored on the same variants)")
    if groups is not None and task == "binary":
        kept = pd.Series(y * keep).groupby(groups).sum()
        lost = set(kept.index[kept.to_numpy() == 0])
        if lost:
            keep &= ~np.isin(groups, list(lost))
            notes.append(f"{len(lost):,} match group(s) left out: their positive variant has no score")
    if vm.defined(task, y[keep]):
        raise GenossmError(f"{opts.variants}: after leaving out the variants some predictor cannot score, the labels "
                           f"have {vm.defined(task, y[keep])} ({int(keep.sum()):,} variants left)")
    predictors = _predictors(raw, user, direction)
    oriented = {name: sign * raw[column][keep] for name, (column, sign) in predictors.items()}
    model = signed_name(MODEL, DAMAGING_SIGN[MODEL] * (-1 if direction == "benign" else 1))
    baselines = [n for n, (column, _) in predictors.items() if column not in ("genossm_llr", "genossm_emb_dist")]
    strata = {k: v[keep] for k, v in _strata(labelled, stratify).items()}
    units = groups[keep] if groups is not None else None
    y_eval, chrom = y[keep], strata["chrom"]
    primary = vm.primary_metric(task, chrom)

    # the metrics, overall and by stratum
    overall = vm.evaluate_predictors(task, y_eval, oriented, chrom, units, n_boot, int(opts.seed), model=model)
    by_stratum: dict = {}
    for column, values in strata.items():
        levels = list(dict.fromkeys(values))
        if len(levels) < 2:
            continue
        by_stratum[column] = {}
        for level in levels:
            at = values == level
            why = vm.defined(task, y_eval[at])
            if why:
                by_stratum[column][str(level)] = {"n": int(at.sum()), "skipped": why}
                continue
            by_stratum[column][str(level)] = vm.evaluate_predictors(
                task, y_eval[at], {k: v[at] for k, v in oriented.items()}, chrom[at],
                None if units is None else units[at], n_boot, int(opts.seed), model=model)
    unit = "match groups" if groups is not None else "variants"
    sentence = (vm.verdict(overall, model, baselines, primary, unit) if direction != "both" else
                "direction=both shows every predictor with both signs and gives no verdict: a sign picked on these "
                "labels would flatter every predictor; set direction=damaging or benign before looking.")
    seconds = time.perf_counter() - started
    result = {
        "variants": str(opts.variants), "label": label_text, "task": task, "direction": direction,
        "match_group": group_column, "primary_metric": primary, "model": model, "baselines": baselines,
        "model_scores": scored_text, "markov": markov_info, "bootstrap": n_boot, "seed": int(opts.seed),
        "n_labelled": int(len(y)), "n_evaluated": int(keep.sum()), "notes": notes,
        "overall": overall, "strata": by_stratum, "verdict": sentence, "seconds": seconds,
    }

    # write
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    write_table(metrics_table(result), out / "metrics.tsv", float_format="%.6g")
    write_json(result, out / "metrics.json")
    scores = labelled.table[["chrom", "pos", "ref", "alt", "kind"]].copy()
    scores["label"] = y
    if groups is not None:
        scores["match_group"] = groups
    for column in stratify:
        scores[column] = labelled.strings(column)
    for name, values in raw.items():
        scores[name] = values
    scores["evaluated"] = keep
    write_table(scores, out / "scores.tsv", float_format="%.6g")
    plot = out / ("pr.png" if task == "binary" else "scatter.png")
    plot_variant_evaluation(task, y_eval, oriented, overall["predictors"], plot,
                            title=f"{Path(str(opts.variants)).name}: {label_text}")
    print(report(result, out, plot))
    return result


def metrics_table(result: dict) -> pd.DataFrame:
    """``metrics.tsv``: one row per stratum, predictor and metric (``stratum`` ``all`` or ``COLUMN=VALUE``), with
    the 95 % interval, what a random score reaches, and the model's paired difference to that predictor."""
    import pandas as pd

    rows = []

    def add(stratum: str, res: dict) -> None:
        for predictor, metrics in res["predictors"].items():
            for metric, m in metrics.items():
                d = res["versus"].get(predictor, {}).get(metric, {})
                rows.append({"stratum": stratum, "predictor": predictor, "metric": metric, "value": m["value"],
                             "low": m["low"], "high": m["high"], "random": res["random"].get(metric),
                             "model_minus_this": d.get("difference"), "difference_low": d.get("low"),
                             "difference_high": d.get("high"), "n": res["n"], "n_positive": res.get("n_positive"),
                             "n_units": res["n_units"]})

    add("all", result["overall"])
    for column, levels in result["strata"].items():
        for level, res in levels.items():
            if "predictors" in res:
                add(f"{column}={level}", res)
    return pd.DataFrame(rows, columns=["stratum", "predictor", "metric", "value", "low", "high", "random",
                                       "model_minus_this", "difference_low", "difference_high", "n", "n_positive",
                                       "n_units"])


def _cell(m: dict | None, interval: bool = True) -> str:
    if not m or m.get("value") is None:
        return "-"
    if interval and m.get("low") is not None:
        return f"{m['value']:.3f} [{m['low']:.3f}, {m['high']:.3f}]"
    return f"{m['value']:.3f}"


def _table(res: dict, metrics: list[str], first: str = "predictor") -> list[str]:
    from genossm.tasks import variant_metrics as vm

    width = max([len(first), *(len(p) for p in res["predictors"]), len("random")]) + 2
    lines = [f"  {first:<{width}}" + "".join(f"{vm.METRIC_NAMES[m]:<25}" for m in metrics)]
    for name, values in res["predictors"].items():
        lines.append(f"  {name:<{width}}" + "".join(f"{_cell(values.get(m)):<25}" for m in metrics))
    lines.append(f"  {'random':<{width}}" + "".join(
        f"{'-' if res['random'].get(m) is None else format(res['random'][m], '.3f'):<25}" for m in metrics))
    return lines


def report(result: dict, out: Path, plot: Path) -> str:
    """The printed report: what was evaluated, the overall table, one table per stratum column (the primary
    metric), the notes, the verdict and where the files are."""
    from genossm.tasks import variant_metrics as vm

    overall = result["overall"]
    task = result["task"]
    metrics = list(vm.BINARY_METRICS if task == "binary" else vm.REGRESSION_METRICS)
    if task == "binary" and len(result["strata"].get("chrom", {})) == 0:
        metrics.remove("auprc_by_chrom")  # one chromosome: equal to the AUPRC
    positives = f", {overall['n_positive']:,} positive" if task == "binary" else ""
    unit = "match groups" if result["match_group"] else "variants"
    boot = (f"95 % intervals from {result['bootstrap']:,} resamples of {unit}" if result["bootstrap"]
            else "no intervals (bootstrap=0)")
    m = result["markov"]
    lines = [
        "",
        f"{result['variants']}: label {result['label']}; {result['n_evaluated']:,} of {result['n_labelled']:,} "
        f"alleles evaluated{positives}",
        f"genossm scores: {result['model_scores']}; Markov LLR: order {m['order']} (chosen on the reference's own "
        f"bases, <= {m['max_order']}) fitted on {m['fitted_on_bases']:,} bases of {m['fasta']}",
        f"direction={result['direction']}: every score is oriented so that higher predicts the positive label; "
        "a leading - is a negated score",
        "",
        f"all variants ({boot}):",
        *_table(overall, metrics),
    ]
    primary = result["primary_metric"]
    for column, levels in result["strata"].items():
        lines += ["", f"by {column} ({vm.METRIC_NAMES[primary]}):"]
        names = list(overall["predictors"])
        width = max(len(f"{column}={lvl}") for lvl in levels) + 14
        lines.append(f"  {column:<{width}}" + "".join(f"{n:<25}" for n in names))
        for level, res in levels.items():
            n_text = f"{level} (n={res['n']:,}" + (f", {res['n_positive']:,}+" if "n_positive" in res else "") + ")"
            if "predictors" not in res:
                lines.append(f"  {n_text:<{width}}{'not computed: ' + res['skipped']}")
                continue
            lines.append(f"  {n_text:<{width}}" + "".join(f"{_cell(res['predictors'][n].get(primary)):<25}" for n in names))
    if result["notes"]:
        lines += [""] + [f"note: {note}" for note in result["notes"]]
    lines += ["", result["verdict"], f"written: {out / 'metrics.tsv'}, metrics.json, scores.tsv, {plot.name} "
              f"({result['seconds']:.0f} s)"]
    return "\n".join(lines)


# the run of a composed config (genossm.compose), for the command and for Python
run = evaluate_variants


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="evaluate_variants")
@user_errors
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
