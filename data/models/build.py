"""Make the bundled reference models in data/models/ (run from the repository root).

    # 1. train (the recipes in conf/experiment/; about 75 minutes each on a 2-core CPU)
    genossm pretrain experiment=bacteria fasta=../shared/data/genomes/ecoli_k12_mg1655.fa.gz output=runs/bacteria
    genossm pretrain experiment=human_chr20 fasta=../shared/data/genomes/human_chr20_GRCh37.fa.gz output=runs/human_chr20
    # 2. bundle (fp16 weights), measure every figure with genossm's own commands, write the model card
    python data/models/build.py bacteria runs/bacteria [--shared ../shared/data] [--work outputs/models]
    python data/models/build.py human_chr20 runs/human_chr20

Step 2 runs ``genossm evaluate`` / ``finetune`` / ``score-variants`` on the bundled (fp16) model by name, so the
card's figures are those of the weights users get. Each command is printed in the card.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))

from genossm.checksums import file_sha256  # noqa: E402
from genossm.models import from_pretrained, load_extra, save_pretrained  # noqa: E402
from genossm.models.hub import CONFIG_NAME, WEIGHTS_NAME, write_checksum  # noqa: E402

# the bundled FASTA window every card reports and tests/models/test_bundled.py re-scores
CHECK = {
    "bacteria": ("athaliana_chloroplast.fa", 16),
    "human_chr20": ("human_chr20_slice.fa.gz", 16),
}
GENOMES = {
    "bacteria": ("genomes/ecoli_k12_mg1655.fa.gz", "E. coli K-12 MG1655"),
    "human_chr20": ("genomes/human_chr20_GRCh37.fa.gz", "human chromosome 20, GRCh37"),
}
SATURATION = "20:31000001-31001000"  # 1 kb of chr20 (GRCh37) for the human model's saturation run


def bundle(name: str, run: Path, genome: Path, summary_line: str) -> Path:
    """data/models/<name>: fp16 weights and a config.json recording the training genome (file name and
    checksum, no local path), the held-out span and the training window."""
    model = from_pretrained(run / "model")
    extra = load_extra(run / "model")
    summary = json.loads((run / "summary.json").read_text())
    folder = HERE / name
    extra = {
        "train_window_len": extra["train_window_len"],
        "fasta": genome.name,
        "fasta_sha256": file_sha256(genome),
        "held_out": extra.get("held_out") or held_out_from_config(run),
        "recipe": f"genossm pretrain experiment={name} fasta={genome.name}",
        "global_step": summary["global_step"],
        "summary": summary_line,
    }
    save_pretrained(model.to(torch.float16), folder, extra=extra)
    (folder / WEIGHTS_NAME).chmod(0o644)
    write_checksum(folder)
    return folder


def held_out_from_config(run: Path) -> list:
    """The held-out span of a run exported before models recorded it: its data module, rebuilt from the run's
    saved config, names the validation and test intervals."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    dm = instantiate(OmegaConf.load(run / "config.yaml").data)
    return [[c, int(s), int(e)] for split in ("val", "test") for c, s, e in dm.intervals(split)]


def genossm(args: list[str], log: list[str], done: Path | None = None) -> None:
    """Run one genossm command (recorded for the card); skipped when ``done`` exists from an earlier run."""
    line = "genossm " + " ".join(shlex.quote(a) for a in args)
    log.append(line)
    if done is not None and done.exists():
        print(f"(kept from an earlier run) $ {line}", flush=True)
        return
    print(f"$ {line}", flush=True)
    subprocess.run([sys.executable, "-m", "genossm.cli", *args], check=True, cwd=REPO)


def measure(name: str, shared: Path, work: Path) -> dict:
    """Run every figure's command on the bundled model; returns the parsed results and the commands."""
    work.mkdir(parents=True, exist_ok=True)
    meta = json.loads((HERE / name / CONFIG_NAME).read_text())["extra"]
    genome = shared / GENOMES[name][0]
    commands: list[str] = []
    results: dict = {"commands": commands}
    common = ["torch_threads=1", f"cache_dir={work / 'cache'}"]
    contig, start, end = meta["held_out"][0]
    bed = work / "held_out.bed"
    bed.write_text(f"{contig}\t{start}\t{end}\n")
    genossm(["evaluate", f"pretrained=bundled:{name}", f"fasta={genome}", f"regions={bed}", "max_windows=null",
             "passes=2", f"output={work / 'held_out'}", *common], commands, work / "held_out" / "evaluation.json")
    results["held_out"] = json.loads((work / "held_out" / "evaluation.json").read_text())
    fasta, windows = CHECK[name]
    genossm(["evaluate", f"pretrained=bundled:{name}", f"fasta=data/{fasta}", f"max_windows={windows}",
             "baselines.enabled=false", f"output={work / 'check'}", *common], commands, work / "check" / "evaluation.json")
    results["check"] = json.loads((work / "check" / "evaluation.json").read_text())
    if name == "bacteria":
        for key, other in (("saureus", "genomes/saureus_n315.fa.gz"), ("ecoli_dh1", "genomes/ecoli_dh1.fa.gz")):
            genossm(["evaluate", f"pretrained=bundled:{name}", f"fasta={shared / other}", "max_windows=1024",
                     f"baseline_fasta={genome}", f"output={work / key}", *common], commands)
            results[key] = json.loads((work / key / "evaluation.json").read_text())
        genossm(["finetune", f"pretrained=bundled:{name}", f"output={work / 'finetune'}", "torch_threads=1"], commands)
        results["finetune"] = json.loads(next((work / "finetune").rglob("metrics.json")).read_text())
    else:
        vcf = shared / "variants" / "chr20_indels_1000g.vcf.gz"
        # windows of 512 bases (the model trained on 2,048): the indels' pseudo-log-likelihoods take one masked
        # window per scored base, four times cheaper at 512
        genossm(["score-variants", f"pretrained=bundled:{name}", f"fasta={genome}", f"variants={vcf}",
                 "window_len=512", f"output={work / 'indels.vcf.gz'}", *common], commands, work / "indels.tsv")
        results["indels"] = indel_figures(work / "indels.tsv", work / "indels.vcf.gz")
        genossm(["score-variants", f"pretrained=bundled:{name}", f"fasta={genome}", "scan=saturation",
                 f"region={SATURATION}", "window_len=512", f"output={work / 'saturation.tsv'}", f"heatmap={HERE / name / 'saturation.png'}",
                 *common], commands, work / "saturation.tsv")
        results["saturation"] = saturation_figures(work / "saturation.tsv")
    (work / "results.json").write_text(json.dumps(results, indent=2))
    return results


def indel_figures(table: Path, vcf: Path) -> dict:
    """Counts, medians and the score's rank correlation with INFO/AF (read from the scored bgzip VCF, which keeps
    every input record in order; the input is plain gzip, which pysam cannot open)."""
    import numpy as np
    import pandas as pd
    import pysam

    rows = pd.read_csv(table, sep="\t")
    with pysam.VariantFile(str(vcf)) as handle:
        af = {}
        for i, rec in enumerate(handle):
            value = rec.info.get("AF")
            af[i] = float(value[0] if isinstance(value, tuple) else value) if value is not None else np.nan
    rows["af"] = rows["record"].map(af)
    scored = rows[rows["llr"].notna()]
    out = {"alleles": int(len(rows)), "scored": int(len(scored)),
           "skipped": {str(k): int(v) for k, v in rows[rows["llr"].isna()]["reason"].value_counts().items()},
           "median_llr": float(scored["llr"].median()) if len(scored) else None}
    change = scored["alt"].astype(str).str.len() - scored["ref"].astype(str).str.len()
    for kind, rows_of_kind in (("deletion", change < 0), ("insertion", change > 0)):
        part = scored[rows_of_kind]
        out[f"{kind}s"] = int(len(part))
        out[f"{kind}_median_llr"] = float(part["llr"].median()) if len(part) else None
    both = scored.dropna(subset=["af"])
    spearman = both["llr"].rank().corr(both["af"].rank())  # Spearman: Pearson of the ranks (no scipy needed)
    out["spearman_llr_af"] = float(spearman) if len(both) > 2 else None
    out["n_with_af"] = int(len(both))
    return out


def saturation_figures(table: Path) -> dict:
    import pandas as pd

    rows = pd.read_csv(table, sep="\t")
    llr = rows["llr"].dropna()
    return {"substitutions": int(len(rows)), "scored": int(len(llr)), "median_llr": float(llr.median()),
            "fraction_below_minus_1": float((llr < -1).mean())}


# ---- the card ------------------------------------------------------------------------------------------------

def _f(x, digits=4):
    return "-" if x is None or x != x else f"{x:.{digits}f}"


def eval_table(result: dict) -> str:
    m, b = result["model"], result["baselines"]
    lines = ["| predictor | bits per base | ± s.e. | accuracy | bases scored |", "|---|---|---|---|---|",
             f"| this model (masked positions) | **{_f(m['bpb'])}** | {_f(m.get('bpb_se'))} | {_f(m['acc'])} | "
             f"{int(m['n_bases']):,} |"]
    if b:
        lines.append(f"| composition entropy (order 0) | {_f(b['composition_entropy'])} | | | {b['n_bases']:,} |")
        lines.append(f"| Markov, order {b['train_order']} (chosen on the training bases) | {_f(b['train_markov'])} | | | "
                     f"{b['n_bases']:,} |")
        lines.append(f"| best Markov of order ≤ {max(map(int, b['markov']))} (order {b['best_order']}, chosen on these "
                     f"bases) | {_f(b['best_markov'])} | {_f(b.get('best_markov_se'))} | | {b['n_bases']:,} |")
    text = "\n".join(lines)
    if b:
        gain = b["best_markov"] - m["bpb"]
        text += (f"\n\nMargin over the best Markov model: **{gain:+.4f} bits per base** "
                 f"(Markov fitted on {b['fitted_on'].replace(str(REPO) + '/', '')}).")
    return text


def finetune_table(metrics: dict) -> str:
    lines = ["| method | AUROC | AUPRC | MCC | accuracy |", "|---|---|---|---|---|"]
    for name, splits in metrics["methods"].items():
        t = splits.get("test", {})
        lines.append(f"| {name} | {_f(t.get('auroc'), 3)} | {_f(t.get('auprc'), 3)} | {_f(t.get('mcc'), 3)} | "
                     f"{_f(t.get('accuracy'), 3)} |")
    n = next(iter(metrics["methods"].values())).get("test", {}).get("n")
    return "\n".join(lines) + (f"\n\nTest split: {n} regions; MCC and accuracy at the threshold chosen without the "
                               "test split." if n else "")


def scrub(command: str) -> str:
    """A command as a user would type it: without this build's thread and cache settings (the card's text,
    commands included, loses the local folder prefixes in :func:`card`)."""
    return re.sub(r" (torch_threads=1|cache_dir=\S+)", "", command)


def card(name: str, run: Path, results: dict, shared: Path, work: Path, machine: str) -> Path:
    folder = HERE / name
    meta = json.loads((folder / CONFIG_NAME).read_text())
    extra, cfg = meta["extra"], meta["model_config"]
    summary = json.loads((run / "summary.json").read_text())
    run_cfg = (run / "config.yaml").read_text()
    batch = int(re.search(r"batch_size: (\d+)", run_cfg.split("\ndata:")[1]).group(1))
    steps, window = summary["global_step"], extra["train_window_len"]
    params = from_pretrained(folder).num_parameters()
    contig, start, end = extra["held_out"][0]
    genome_file, genome_label = GENOMES[name]
    size = (folder / WEIGHTS_NAME).stat().st_size
    check = results["check"]["model"]["bpb"]
    fasta, windows = CHECK[name]
    parts = [
        f"# genossm reference model `{name}`",
        "",
        extra["summary"],
        "",
        f"Use it by name in any workflow (`pretrained=bundled:{name}`) or from Python "
        f"(`genossm.models.from_pretrained(\"bundled:{name}\")`).",
        "",
        "| | |",
        "|---|---|",
        f"| parameters | {params:,} (d_model {cfg['d_model']}, {cfg['n_layers']} layers, d_state {cfg['d_state']}, "
        f"bidirectional, {'RC-equivariant' if cfg['rc_equivariant'] else 'not RC-equivariant (trained with reverse-complement augmentation)'}) |",
        f"| weights | `model.safetensors`, fp16, {size / 1e6:.1f} MB |",
        f"| training genome | {genome_label}: `{Path(genome_file).name}`, sha256 `{extra['fasta_sha256']}` |",
        f"| held-out span | `{contig}:{start + 1:,}-{end:,}` (1-based, {end - start:,} bp: validation; no training "
        "window touches it) |",
        f"| recipe | `{extra['recipe']}` (conf/experiment/{name}.yaml) |",
        f"| steps, tokens seen | {steps:,} steps of {batch} × {window:,}-base windows = {steps * batch * window / 1e6:.1f} M "
        "tokens (15 % of them scored by the masked-LM loss) |",
        f"| wall time | {summary['fit_seconds'] / 60:.0f} min of training ({summary['tokens_per_second']:,.0f} tokens/s), "
        f"{summary['wall_seconds'] / 60:.0f} min for the whole run |",
        f"| machine | {machine} |",
        "",
        "## Held-out span of the training genome",
        "",
        eval_table(results["held_out"]),
        "",
    ]
    if name == "bacteria":
        parts += ["## Unseen genomes", "",
                  "The Markov models are fitted on the E. coli K-12 training span, like the model.", ""]
        for key, label in (("saureus", "*S. aureus* N315 (2.8 Mb, another phylum)"),
                           ("ecoli_dh1", "*E. coli* DH1 (another strain of the training species)")):
            parts += [f"### {label}", "", eval_table(results[key]), ""]
        parts += ["## Fine-tuning on the shipped chloroplast promoter task", "",
                  "`genossm finetune pretrained=bundled:bacteria` (chloroplasts are of bacterial descent), beside the "
                  "linear probe on frozen embeddings and the k-mer baseline:", "", finetune_table(results["finetune"]), ""]
    else:
        ind, sat = results["indels"], results["saturation"]
        parts += ["## Variant scoring", "",
                  f"`chr20_indels_1000g.vcf.gz` (real 1000 Genomes indels, windows of 512 bases): {ind['scored']} of "
                  f"{ind['alleles']} alleles "
                  f"scored ({', '.join(f'{v} {k}' for k, v in ind['skipped'].items()) or 'none'} skipped); median "
                  f"log-likelihood ratio {_f(ind['median_llr'], 3)} nats (deletions {_f(ind['deletion_median_llr'], 3)}, "
                  f"insertions {_f(ind['insertion_median_llr'], 3)}); Spearman correlation of the score with the "
                  f"allele frequency over {ind['n_with_af']} alleles: {_f(ind['spearman_llr_af'], 3)}. These indels have no "
                  "measured effects, so this says only that the scores are defined and how they spread.", "",
                  f"Saturation mutagenesis of `{SATURATION}` ({sat['substitutions']:,} substitutions): median "
                  f"{_f(sat['median_llr'], 3)} nats, {sat['fraction_below_minus_1']:.1%} below −1 nat.", "",
                  "![saturation heatmap](saturation.png)", ""]
    parts += [
        "## Check figure",
        "",
        f"Bits per base on the bundled `data/{fasta}`, first {windows} evenly spread windows, seed 0: "
        f"**{check:.4f}** (`tests/models/test_bundled.py` re-scores it, so this card cannot drift from the weights).",
        "",
        "## How the figures were measured",
        "",
        "```bash",
        *[scrub(c) for c in results["commands"]],
        "```",
        "",
        "Bits per base of the model are over masked positions (15 % of the bases per pass, each predicted from both "
        "sides); the baselines score every base of the same windows from the bases before it. Standard errors are "
        "over windows. Made by `python data/models/build.py`.",
        "",
    ]
    path = folder / "README.md"
    text = "\n".join(parts)
    for prefix in {str(shared.resolve()), str(shared), str(work.resolve()), str(work), str(REPO)}:
        text = text.replace(prefix + "/", "")  # genomes by their path under the shared data, no local folders
    path.write_text(text)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(CHECK))
    parser.add_argument("run", type=Path, help="the pretraining run folder (output= of genossm pretrain)")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "models")
    parser.add_argument("--machine", default="2-core x86-64 CPU (AVX-512, AMX-BF16), one torch thread, shared with "
                                             "other jobs; 24 GiB")
    parser.add_argument("--summary", required=True, help="the one-line description of the model")
    parser.add_argument("--skip-measure", action="store_true", help="re-write the card from the saved results")
    args = parser.parse_args()
    work = args.work / args.name
    genome = args.shared / GENOMES[args.name][0]
    if not args.skip_measure:
        bundle(args.name, args.run, genome, args.summary)
        results = measure(args.name, args.shared, work)
    else:
        results = json.loads((work / "results.json").read_text())
    print(card(args.name, args.run, results, args.shared, work, args.machine))


if __name__ == "__main__":
    main()
