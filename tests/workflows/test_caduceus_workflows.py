"""Every workflow runs with a Caduceus / PlantCaduceus checkpoint as pretrained= (a local checkpoint folder, and
hf: through the Hugging Face cache), with the strand semantics of each model."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from genossm import cli
from genossm.models import load_extra
from genossm.paths import conf_dir

from helpers import run_cli

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "caduceus"
SLICE = "variants_chr20_slice.fa.gz"
INDELS = "variants_chr20_indels_1000g.vcf.gz"
PS, PH = FIXTURES / "caduceus_ps", FIXTURES / "caduceus_ph"
# ten bases around the first 1000 Genomes indel of the bundled slice, as a browser shows them
SATURATION = "region=20:421801-421810"


def saturation(model: Path, strands: str, tmp_path, monkeypatch, bundled_data) -> pd.DataFrame:
    out = tmp_path / f"{model.name}_{strands}.tsv"
    run_cli(["score-variants", f"pretrained={model}", f"fasta={bundled_data / SLICE}", "scan=saturation", SATURATION,
             "window_len=64", f"strands={strands}", f"output={out}", "progress=false"], monkeypatch, tmp_path)
    return pd.read_csv(out, sep="\t")


def test_score_variants_strands_follow_each_model(bundled_data, tmp_path, monkeypatch):
    """Caduceus-PS is RC-equivariant: strands=auto reads the forward strand only, and both strands give the same
    scores. Caduceus-Ph is not: strands=auto averages the sequence and its reverse complement, as its authors do."""
    ps = {s: saturation(PS, s, tmp_path, monkeypatch, bundled_data)["llr"] for s in ("auto", "forward", "both")}
    assert len(ps["auto"]) == 30 and ps["auto"].notna().all()
    np.testing.assert_array_equal(ps["auto"], ps["forward"])
    np.testing.assert_allclose(ps["auto"], ps["both"], atol=1e-4)

    ph = {s: saturation(PH, s, tmp_path, monkeypatch, bundled_data)["llr"] for s in ("auto", "forward", "both")}
    assert ph["auto"].notna().all()
    np.testing.assert_array_equal(ph["auto"], ph["both"])
    assert np.abs(ph["auto"] - ph["forward"]).max() > 1e-3  # the average of two different strands


def test_score_variants_vcf_with_indels(bundled_data, tmp_path, monkeypatch):
    import pysam

    import gzip

    with gzip.open(bundled_data / INDELS, "rt") as handle:  # the header and the first two indels
        lines = handle.read().splitlines()
    first = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    vcf = tmp_path / "two.vcf"
    vcf.write_text("\n".join(lines[: first + 2]) + "\n")
    out = tmp_path / "scored.vcf.gz"
    run_cli(["score-variants", f"pretrained={FIXTURES / 'plantcaduceus_bin'}", f"fasta={bundled_data / SLICE}",
             f"variants={vcf}", "window_len=64", f"output={out}", "progress=false"], monkeypatch, tmp_path)
    with pysam.VariantFile(str(out)) as vf:
        records = list(vf)
        header = str(vf.header)
    assert [r.pos for r in records] == [421808, 1292033]
    assert all(math.isfinite(r.info["GENOSSM_LLR"][0]) for r in records)
    assert "normalised over the four bases A, C, G, T" in header


@pytest.mark.slow
def test_evaluate_embed_finetune_score_regions(bundled_data, tmp_path, monkeypatch):
    # evaluate: bits per base on held-out regions, the baselines fitted on the rest of the FASTA
    bed = tmp_path / "r.bed"
    bed.write_text("ecoli_k12\t1000\t3000\n")
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[
            f"pretrained={PS}", f"fasta={bundled_data / 'multi_contig.fa'}", f"regions={bed}", "window_len=500",
            f"output={tmp_path / 'eval'}", f"cache_dir={tmp_path / 'cache'}", "baselines.max_order=2"])
    result = cli.load_workflow("evaluate").evaluate(cfg)
    assert result["window_len"] == 500 and result["bases_in_windows"] == 2000
    assert math.isfinite(result["model"]["bpb"]) and result["model"]["bpb"] > 0

    # embed: the checkpoint's hidden states, reverse-complement invariant
    fa = tmp_path / "seqs.fa"
    rng = np.random.default_rng(1)
    seqs = ["".join(rng.choice(list("ACGT"), n)) for n in (40, 25)]
    from Bio.Seq import reverse_complement

    fa.write_text(f">a\n{seqs[0]}\n>b\n{seqs[1]}\n>b_rc\n{reverse_complement(seqs[1])}\n")
    run_cli(["embed", f"pretrained={FIXTURES / 'plantcaduceus'}", f"regions={fa}", "output=e.npy"], monkeypatch, tmp_path)
    emb = np.load(tmp_path / "e.npy")
    assert emb.shape == (3, 24)  # PlantCaduceus' d_model
    np.testing.assert_allclose(emb[1], emb[2], rtol=1e-4, atol=1e-5)

    # finetune: the backbone fine-tunes under genossm's head; the saved model records where it came from
    run_dir = tmp_path / "ft"
    run_cli(["finetune", f"pretrained={PS}", f"output={run_dir}", "trainer.fast_dev_run=true",
             "trainer.enable_progress_bar=false", "train.batch_size=16"], monkeypatch, tmp_path)
    head = load_extra(run_dir / "model")["region_head"]
    assert head["backbone"] == str(PS.resolve())
    saved = json.loads((run_dir / "model" / "config.json").read_text())["model_config"]
    assert saved["strand_swap"] is True and saved["share_in_proj"] is True and saved["token_ids"][:4] == [7, 8, 9, 10]

    # score-regions with the fine-tuned model
    task = pd.read_csv(bundled_data / "chloroplast_promoters.tsv", sep="\t").iloc[[3, 0]]
    regions = tmp_path / "new.bed"
    task[["chrom", "start", "end", "name"]].to_csv(regions, sep="\t", header=False, index=False)
    run_cli(["score-regions", f"pretrained={run_dir / 'model'}", f"regions={regions}", "output=scores.tsv"],
            monkeypatch, tmp_path)
    scores = pd.read_csv(tmp_path / "scores.tsv", sep="\t")
    assert scores["name"].tolist() == task["name"].tolist() and scores["score"].between(0, 1).all()


@pytest.mark.slow
def test_hf_name_on_the_command_line(bundled_data, tmp_path):
    """genossm score-variants pretrained=hf:... in a fresh process, from a Hugging Face cache, offline."""
    repo = "kuleshov-group/caduceus-ps_seqlen-131k_d_model-256_n_layer-16"
    commit = "e" * 40
    root = tmp_path / "hf" / "hub" / f"models--{repo.replace('/', '--')}"
    shutil.copytree(PS, root / "snapshots" / commit)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    out = tmp_path / "sat.tsv"
    cmd = [sys.executable, "-m", "genossm.cli", "score-variants", f"pretrained=hf:{repo}",
           f"fasta={bundled_data / SLICE}", "scan=saturation", SATURATION, "window_len=64", f"output={out}",
           "progress=false"]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert pd.read_csv(out, sep="\t")["llr"].notna().sum() == 30
    # a name that is not in the cache: one line, exit status 2
    cmd[4] = "pretrained=hf:kuleshov-group/PlantCaduceus_l32"
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(
        "genossm: error: hf:kuleshov-group/PlantCaduceus_l32: not in the Hugging Face cache and HF_HUB_OFFLINE is set")
