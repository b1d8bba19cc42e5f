"""A region copied from a genome browser, with thousands separators, works unquoted on the command line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from genossm.cli import quote_region

from helpers import run_cli, save_tiny_model

SLICE = Path(__file__).resolve().parents[1] / "data" / "variants_chr20_slice.fa.gz"


def test_browser_regions_are_passed_on_quoted():
    assert quote_region("region=20:421,801-421,840") == 'region="20:421,801-421,840"'
    assert quote_region("region=chrX:1,000") == 'region="chrX:1,000"'
    for unchanged in ("region=20:421801-421840", "region=20", "contigs=[a,b]", "region=[a,b]", "fasta=a,b",
                      'region="20:1,000-2,000"', "region=20:1,00-2,000"):
        assert quote_region(unchanged) == unchanged


def test_saturation_scan_of_a_browser_region(tmp_path, monkeypatch):
    model = save_tiny_model(tmp_path / "m")
    run_cli(["score-variants", f"pretrained={model}", f"fasta={SLICE}", "scan=saturation",
             "region=20:421,801-421,810", f"output={tmp_path / 'sat.tsv'}", "progress=false", "emb_dist=false"],
            monkeypatch, tmp_path)
    table = pd.read_csv(tmp_path / "sat.tsv", sep="\t")
    assert len(table) == 30 and table["pos"].min() == 421801 and table["pos"].max() == 421810
