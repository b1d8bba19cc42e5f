"""genossm inspect: the table agrees with Biopython's own counts; clean error for a bad FASTA."""

import csv
import gzip
import subprocess
import sys
from pathlib import Path

import pytest
from Bio import SeqIO
from hydra import compose, initialize_config_dir

from genossm.cli import load_workflow
from genossm.paths import conf_dir

DATA = Path(__file__).resolve().parents[2] / "data"


def genossm(*args, cwd):
    return subprocess.run([sys.executable, "-m", "genossm.cli", "inspect", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_inspect_matches_biopython_and_reports_errors(tmp_path):
    out = tmp_path / "contigs.tsv"
    run = genossm(f"fasta={DATA / 'multi_contig.fa.gz'}", f"cache_dir={tmp_path}", f"output={out}", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    with gzip.open(DATA / "multi_contig.fa.gz", "rt") as handle:
        records = list(SeqIO.parse(handle, "fasta"))
    rows = list(csv.DictReader(open(out), delimiter="\t"))
    assert [r["contig"] for r in rows] == [r.id for r in records]
    for row, rec in zip(rows, records):
        seq = str(rec.seq)
        acgt = sum(seq.upper().count(b) for b in "ACGT")
        assert int(row["length"]) == len(seq)
        assert float(row["n_fraction"]) == pytest.approx((len(seq) - acgt) / len(seq), abs=1e-6)
        assert float(row["gc_fraction"]) == pytest.approx(sum(seq.upper().count(b) for b in "GC") / acgt, abs=1e-6)
        assert float(row["softmask_fraction"]) == pytest.approx(sum(c.islower() for c in seq) / len(seq), abs=1e-6)
        assert rec.id in run.stdout

    bad = tmp_path / "bad.fa"
    bad.write_text("ACGT\n")
    run = genossm(f"fasta={bad}", f"cache_dir={tmp_path}", cwd=tmp_path)
    assert run.returncode == 2
    assert "genossm: error:" in run.stderr and "bad.fa: not a FASTA file: line 1" in run.stderr
    assert "Traceback" not in run.stderr


def run_in_process(tmp_path, *overrides):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="inspect", overrides=[f"cache_dir={tmp_path}", *overrides])
    return load_workflow("inspect").inspect(cfg)


def test_default_is_the_bundled_genome_and_softmask_is_counted(tmp_path, capsys):
    rows = run_in_process(tmp_path)
    assert [(r["contig"], r["length"]) for r in rows] == [("NC_000932.1", 154_478)]
    assert "NC_000932.1" in capsys.readouterr().out
    (row,) = run_in_process(tmp_path, f"fasta={DATA / 'athaliana_chloroplast_softmasked.fa'}")
    seq = str(SeqIO.read(DATA / "athaliana_chloroplast_softmasked.fa", "fasta").seq)
    assert row["softmask_fraction"] == pytest.approx(sum(c.islower() for c in seq) / len(seq))
    assert f"{row['softmask_fraction']:.2%}" in capsys.readouterr().out
