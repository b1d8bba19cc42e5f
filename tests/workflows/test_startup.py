"""A run says what it does before it loads torch and Lightning (seconds on a small machine): every workflow
script loads without them, and its first log line is the one its option group describes."""

from __future__ import annotations

import subprocess
import sys

from genossm.workflows import WORKFLOWS

from helpers import run_cli

LOAD_ALL = """
import sys
from genossm.workflows import WORKFLOWS, load_workflow
for name in WORKFLOWS:
    load_workflow(name)
print(" ".join(m for m in ("torch", "lightning", "pandas") if m in sys.modules))
"""


def test_every_workflow_script_loads_without_torch_or_lightning():
    done = subprocess.run([sys.executable, "-c", LOAD_ALL], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [], f"loading the {len(WORKFLOWS)} workflow scripts imported {done.stdout.strip()}"


def test_the_first_log_line_says_what_the_run_does(tiny_model, bundled_data, tmp_path, monkeypatch, capsys):
    run_cli(["inspect", "max_rows=1"], monkeypatch, tmp_path)
    assert capsys.readouterr().out.splitlines()[0].startswith("inspect: the contigs of ")
    run_cli(["score-variants", f"pretrained={tiny_model}", f"fasta={bundled_data / 'variants_chr20_slice.fa.gz'}",
             "scan=saturation", "region=20:421801-421804", "window_len=32", "progress=false", "output=sat.tsv"],
            monkeypatch, tmp_path)
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("score-variants: every substitution of 20:421801-421804 against ") and "sat.tsv" in first
