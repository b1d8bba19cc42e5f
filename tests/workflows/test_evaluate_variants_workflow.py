"""genossm evaluate-variants end to end through the command line: the numbers it writes are scikit-learn's and
scipy's on the same variants, and every broken input stops with one line naming the file and line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyfaidx
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from helpers import DATA, run_cli, save_tiny_model

FASTA = "multi_contig.fa"  # chr20, ecoli_k12, saureus_n315: three chromosomes


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("pretrained") / "tiny", rc_equivariant=True, train_window_len=64)


def fails(argv, monkeypatch, tmp_path, capsys) -> str:
    """The one error line of a run that must stop with exit status 2."""
    with pytest.raises(SystemExit) as exc:
        run_cli(argv, monkeypatch, tmp_path)
    assert exc.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("genossm: error:")]
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """48 real-reference SNVs and indels on three chromosomes in 12 match groups (one positive, three controls),
    a score-variants table for them, and the columns a user brings (a CADD-like score, a consequence)."""
    folder = tmp_path_factory.mktemp("labelled")
    fa = pyfaidx.Fasta(str(DATA / FASTA), as_raw=True)
    rng = np.random.default_rng(11)
    rows = []
    contigs = ["chr20", "ecoli_k12", "saureus_n315"]
    for g in range(12):
        contig = contigs[g % 3]
        for member in range(4):
            pos = int(rng.integers(12_000, 29_000))  # 1-based; chr20's first 10 kb are N
            ref = fa[contig][pos - 1:pos].upper()
            kind = rng.integers(0, 3)
            if kind == 0:
                alt = "ACGT".replace(ref, "")[int(rng.integers(0, 3))]
            elif kind == 1:
                alt = ref + "".join(rng.choice(list("ACGT"), int(rng.integers(1, 4))))
            else:
                ref = fa[contig][pos - 1:pos + 2].upper()
                alt = ref[0]
            rows.append({"chrom": contig, "pos": pos, "ref": ref, "alt": alt, "label": int(member == 0),
                         "match_group": f"g{g}", "cadd": round(float(rng.normal() + (member == 0)), 3),
                         "consequence": ["intron", "utr"][(g + member) % 2], "effect": round(float(rng.normal()), 3)})
    table = pd.DataFrame(rows)
    labels = folder / "labelled.tsv"
    table.to_csv(labels, sep="\t", index=False)
    scored = table[["chrom", "pos", "ref", "alt"]].copy()
    scored["llr"] = np.round(rng.normal(size=len(table)) - 0.7 * table["label"], 4)
    scored["emb_dist"] = np.round(rng.random(len(table)), 4)
    scored_path = folder / "scored.tsv"
    scored.iloc[::-1].to_csv(scored_path, sep="\t", index=False)  # another order: joined by allele
    return labels, scored_path, table


def test_binary_metrics_are_sklearns_on_the_written_scores(labelled, bundled_data, tmp_path, monkeypatch, capsys):
    labels, scored, table = labelled
    out = tmp_path / "run"
    run_cli(["evaluate-variants", f"variants={labels}", f"scored={scored}", f"fasta={bundled_data / FASTA}",
             "match_group=match_group", "scores=[cadd]", "stratify=[consequence]", "bootstrap=200", f"output={out}"],
            monkeypatch, tmp_path)
    printed = capsys.readouterr().out
    metrics = pd.read_csv(out / "metrics.tsv", sep="\t")
    scores = pd.read_csv(out / "scores.tsv", sep="\t")
    assert scores["evaluated"].all() and len(scores) == 48
    assert (scores["genossm_llr"].to_numpy() == pd.read_csv(scored, sep="\t")["llr"].to_numpy()[::-1]).all()
    assert np.isfinite(scores["markov_llr"]).all() and (scores.loc[scores["kind"] == "snv", "indel_length"] == 0).all()
    y = scores["label"].to_numpy()
    oriented = {"-genossm_llr": -scores["genossm_llr"], "genossm_emb_dist": scores["genossm_emb_dist"],
                "-markov_llr": -scores["markov_llr"], "indel_length": scores["indel_length"], "cadd": scores["cadd"]}
    overall = metrics[metrics["stratum"] == "all"].set_index(["predictor", "metric"])
    assert set(overall.index.get_level_values(0)) == set(oriented)
    for name, s in oriented.items():
        assert overall.loc[(name, "auroc"), "value"] == pytest.approx(roc_auc_score(y, s), abs=1e-5)
        assert overall.loc[(name, "auprc"), "value"] == pytest.approx(average_precision_score(y, s), abs=1e-5)
        per = [(y[scores["chrom"] == c].sum(), average_precision_score(y[scores["chrom"] == c], s[scores["chrom"] == c]))
               for c in scores["chrom"].unique()]
        want = sum(p * a for p, a in per) / sum(p for p, _ in per)
        assert overall.loc[(name, "auprc_by_chrom"), "value"] == pytest.approx(want, abs=1e-5)
        row = overall.loc[(name, "auprc")]
        assert row["low"] <= row["value"] <= row["high"] and row["n_units"] == 12 and row["random"] == pytest.approx(0.25)
    diff = overall.loc[("cadd", "auprc_by_chrom"), "model_minus_this"]
    assert diff == pytest.approx(overall.loc[("-genossm_llr", "auprc_by_chrom"), "value"]
                                 - overall.loc[("cadd", "auprc_by_chrom"), "value"], abs=1e-5)
    intron = metrics[(metrics["stratum"] == "consequence=intron") & (metrics["metric"] == "auprc")].set_index("predictor")
    at = (scores["consequence"] == "intron").to_numpy()
    assert intron.loc["cadd", "value"] == pytest.approx(average_precision_score(y[at], scores["cadd"][at]), abs=1e-5)
    assert {"kind=snv", "chrom=chr20", "consequence=utr"} <= set(metrics["stratum"])
    result = json.loads((out / "metrics.json").read_text())
    assert result["primary_metric"] == "auprc_by_chrom" and result["model"] == "-genossm_llr"
    assert result["baselines"] == ["-markov_llr", "indel_length", "cadd"]
    assert result["verdict"] in printed and "every baseline beyond the 95 % interval" in result["verdict"]
    assert "resamples of match groups" in printed and (out / "pr.png").stat().st_size > 0
    assert (out / "config.yaml").exists()


def test_real_valued_labels_direction_and_both_signs(labelled, bundled_data, tmp_path, monkeypatch, capsys):
    labels, scored, _ = labelled
    out = tmp_path / "run"
    run_cli(["evaluate-variants", f"variants={labels}", f"scored={scored}", f"fasta={bundled_data / FASTA}",
             "label=effect", "scores=[-cadd]", "direction=benign", "bootstrap=100", f"output={out}"], monkeypatch, tmp_path)
    metrics = pd.read_csv(out / "metrics.tsv", sep="\t")
    scores = pd.read_csv(out / "scores.tsv", sep="\t")
    overall = metrics[metrics["stratum"] == "all"].set_index(["predictor", "metric"])
    y = scores["label"]
    # benign: genossm's LLR as it is (alt at least as likely = the high end), the user's -cadd negated as asked
    assert overall.loc[("genossm_llr", "spearman"), "value"] == pytest.approx(
        stats.spearmanr(scores["genossm_llr"], y).statistic, abs=1e-5)
    assert overall.loc[("-cadd", "pearson"), "value"] == pytest.approx(stats.pearsonr(-scores["cadd"], y).statistic, abs=1e-5)
    assert overall.loc[("-indel_length", "spearman"), "random"] == 0
    assert (out / "scatter.png").exists()
    capsys.readouterr()
    out2 = tmp_path / "both"
    run_cli(["evaluate-variants", f"variants={labels}", f"scored={scored}", f"fasta={bundled_data / FASTA}",
             "direction=both", "bootstrap=0", f"output={out2}"], monkeypatch, tmp_path)
    both = pd.read_csv(out2 / "metrics.tsv", sep="\t")
    auroc = both[(both["stratum"] == "all") & (both["metric"] == "auroc")].set_index("predictor")["value"]
    assert auroc["genossm_llr"] == pytest.approx(1 - auroc["-genossm_llr"], abs=1e-6)
    assert "gives no verdict" in capsys.readouterr().out
    assert both["low"].isna().all()  # bootstrap=0: no intervals


def test_scores_the_variants_now_with_a_model(tiny_model, bundled_data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    run_cli(["evaluate-variants", f"pretrained={tiny_model}", f"fasta={bundled_data / 'variants_chr20_slice.fa.gz'}",
             f"variants={bundled_data / 'variants_chr20_indels_1000g.vcf.gz'}", "label=AF", "label_threshold=0.05",
             "positive=below", "progress=false", "bootstrap=100", f"output={out}"], monkeypatch, tmp_path)
    printed = capsys.readouterr().out
    scored = pd.read_csv(out / "scored.tsv", sep="\t")
    scores = pd.read_csv(out / "scores.tsv", sep="\t")
    assert len(scores) == 194 and np.allclose(scores["genossm_llr"], scored["llr"], equal_nan=True)
    assert scores["label"].sum() == 34  # AF < 0.05
    assert "34 positive" in printed and "by kind" in printed and "insertion" in printed
    assert ("beats every baseline" in printed) or ("does NOT beat every baseline" in printed)


BROKEN = [
    # (file text, extra arguments, what the one error line says)
    ("chrom\tpos\tref\talt\tscore\n20\t5\tA\tC\t1\n", [], "labelled.tsv: line 1: no column 'label'"),
    ("chrom\tpos\tref\talt\tlabel\n20\t5\tA\tC\t1\n20\t9\tA\tG\t\n", [], "labelled.tsv: line 3: no label"),
    ("chrom\tpos\tref\talt\tlabel\n20\t5\tA\tC\t1\n20\t9\tA\tG\tbenign\n", [], "labelled.tsv: line 3: label 'benign'"),
    ("chrom\tpos\tref\talt\tlabel\n20\t5\tA\tC\t1\n20\t9\tA\tG\t0.5\n", ["label_type=binary"],
     "labelled.tsv: line 3: label 0.5 (column label) is not 0 or 1"),
    ("chrom\tpos\tref\talt\tlabel\tgroup\n20\t5\tA\tC\t1\ta\n20\t9\tA\tG\t0\ta\n20\t12\tA\tG\t0\tb\n",
     ["match_group=group"], "labelled.tsv: line 4: match group 'b' (column group) has no positive"),
    ("chrom\tpos\tref\talt\tlabel\tcadd\n20\t5\tA\tC\t1\t3.1\n20\t9\tA\tG\t0\thigh\n", ["scores=[cadd]"],
     "labelled.tsv: line 3: score cadd 'high' (column cadd) is not a number"),
    ("chrom\tpos\tref\talt\tlabel\n20\t5\tA\tC\t1\n20\t9\tA\tG\t1\n", [], "labelled.tsv: the labels (label, binary) have no negative"),
]


@pytest.mark.parametrize("text,extra,message", BROKEN, ids=["no-column", "empty", "text", "not-binary", "group",
                                                            "score", "one-class"])
def test_broken_labels_stop_with_the_file_and_line(text, extra, message, bundled_data, tmp_path, monkeypatch, capsys):
    labels = tmp_path / "labelled.tsv"
    labels.write_text(text)
    scored = tmp_path / "scored.tsv"
    scored.write_text("chrom\tpos\tref\talt\tllr\temb_dist\n20\t5\tA\tC\t-1\t0.1\n20\t9\tA\tG\t-2\t0.2\n")
    line = fails(["evaluate-variants", f"variants={labels}", f"scored={scored}",
                  f"fasta={bundled_data / 'variants_chr20_slice.fa.gz'}", f"output={tmp_path / 'out'}", *extra],
                 monkeypatch, tmp_path, capsys)
    assert message in line
    assert not (tmp_path / "out").exists()


def test_scores_that_do_not_join_stop_with_the_line(bundled_data, tmp_path, monkeypatch, capsys):
    labels = tmp_path / "labelled.tsv"
    labels.write_text("chrom\tpos\tref\talt\tlabel\nchr20\t5\tA\tC\t1\n20\t9\tA\tG\t0\n20\t12\tA\tT\t0\n")
    scored = tmp_path / "scored.tsv"
    scored.write_text("chrom\tpos\tref\talt\tllr\temb_dist\n20\t5\tA\tC\t-1\t0.1\n20\t9\tA\tG\t-2\t0.2\n")
    args = [f"fasta={bundled_data / 'variants_chr20_slice.fa.gz'}", f"output={tmp_path / 'out'}"]
    line = fails(["evaluate-variants", f"variants={labels}", f"scored={scored}", *args], monkeypatch, tmp_path, capsys)
    # chr20 finds 20 (the alias table); 20:12 A>T is in neither
    assert "labelled.tsv: line 4: 20:12 A>T has no score in" in line and "scores and labels do not join" in line
    twice = tmp_path / "twice.tsv"
    twice.write_text(scored.read_text() + "20\t12\tA\tT\t-1\t0.1\n20\t9\tA\tG\t-3\t0.2\n")
    line = fails(["evaluate-variants", f"variants={labels}", f"scored={twice}", *args], monkeypatch, tmp_path, capsys)
    assert "twice.tsv: line 5: 20:9 A>G is scored twice with different values (first at" in line
    line = fails(["evaluate-variants", f"variants={labels}", f"scored={scored}", "pretrained=bundled:human_chr20", *args],
                 monkeypatch, tmp_path, capsys)
    assert "not both" in line
    assert not (tmp_path / "out").exists()


def test_a_vcf_without_the_info_label_names_the_file(bundled_data, tmp_path, monkeypatch, capsys):
    vcf = bundled_data / "variants_chr20_indels_1000g.vcf.gz"
    line = fails(["evaluate-variants", f"variants={vcf}", "scored=nothing.tsv", "label=CLNSIG",
                  f"fasta={bundled_data / 'variants_chr20_slice.fa.gz'}", f"output={tmp_path / 'out'}"],
                 monkeypatch, tmp_path, capsys)
    assert "variants_chr20_indels_1000g.vcf.gz: line 1: no INFO field 'CLNSIG'" in line
    broken = tmp_path / "labels.vcf"
    broken.write_text("##fileformat=VCFv4.2\n##INFO=<ID=Y,Number=1,Type=Float,Description=\"label\">\n"
                      "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n20\t5\t.\tA\tC\t.\t.\tY=1\n20\t9\t.\tA\tG\t.\t.\t.\n")
    line = fails(["evaluate-variants", f"variants={broken}", "scored=nothing.tsv", "label=Y",
                  f"fasta={bundled_data / 'variants_chr20_slice.fa.gz'}", f"output={tmp_path / 'out'}"],
                 monkeypatch, tmp_path, capsys)
    assert "labels.vcf: line 5: no label (Y is empty) for 20:9 A>G" in line
