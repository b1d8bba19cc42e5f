"""The `genossm` command: help, unknown workflows, clean user errors, and running from any directory."""

import errno
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from genossm import cli
from genossm.atomic import atomic_path, atomic_write
from genossm.errors import GenossmError
from genossm.paths import conf_dir, data_dir, workflows_dir

from helpers import save_tiny_model

def test_help_lists_every_workflow(capsys):
    cli.main(["--help"])
    out = capsys.readouterr().out
    for name in cli.WORKFLOWS:
        assert name in out


def test_every_listed_workflow_has_its_script():
    for name, (filename, _) in cli.WORKFLOWS.items():
        assert (workflows_dir() / filename).is_file(), f"workflow {name} has no {filename}"


def test_unknown_workflow_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["pretrian"])
    assert exc.value.code == 2
    assert "unknown workflow 'pretrian'" in capsys.readouterr().err


def test_user_errors_print_one_line(capsys):
    @cli.user_errors
    def job():
        raise GenossmError("genome.fa line 3: not a FASTA header")

    with pytest.raises(SystemExit) as exc:
        job()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == "genossm: error: genome.fa line 3: not a FASTA header"
    assert "Traceback" not in err


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as handle:
            handle.write("half")
            raise RuntimeError("crash mid-way")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_write(target, "w") as handle:
        handle.write("new")
    assert target.read_text() == "new"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_honour_the_umask(tmp_path, umask, mode):
    before = os.umask(umask)
    try:
        with atomic_write(tmp_path / "a.tsv", "w") as handle:
            handle.write("x")
        with atomic_path(tmp_path / "b.png", suffix=".png") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(before)
    assert stat.S_IMODE((tmp_path / "a.tsv").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "b.png").stat().st_mode) == mode


def test_full_disk_names_the_output_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "scores.tsv"
    target.write_text("old")
    with pytest.raises(GenossmError, match=r"scores\.tsv: cannot write the output: No space left on device"):
        with atomic_write(target, "w") as handle:
            handle.write("half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.tsv"]


def test_output_below_a_file_is_one_clean_error(tmp_path):
    (tmp_path / "taken").write_text("a file, not a folder")
    done = subprocess.run([sys.executable, "-m", "genossm.cli", "inspect", f"output={tmp_path / 'taken' / 'contigs.tsv'}"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"genossm: error: {tmp_path / 'taken' / 'contigs.tsv'}: cannot write there: {tmp_path / 'taken'} is a file" in done.stderr


def test_configs_and_data_are_found():
    from omegaconf import OmegaConf

    # the pretrain root config with its demo defaults, and the demo genome it points to
    defaults = OmegaConf.to_container(OmegaConf.load(conf_dir() / "pretrain.yaml").defaults)
    assert {"data": "demo"} in defaults and {"model": "tiny"} in defaults and {"experiment": "demo"} in defaults
    assert "${bundled:athaliana_chloroplast.fa}" in (conf_dir() / "data" / "demo.yaml").read_text()
    assert (data_dir() / "athaliana_chloroplast.fa").read_text()[:13] == ">NC_000932.1 "
    assert (data_dir() / "athaliana_chloroplast.fa.fai").read_text().split("\t")[:2] == ["NC_000932.1", "154478"]


def test_console_script_runs_from_any_directory(tmp_path):
    # the script installed beside this interpreter (the active environment), else the one on PATH
    script = Path(sys.executable).with_name("genossm")
    script = str(script) if script.exists() else shutil.which("genossm")
    assert script, "the genossm console script is not installed"
    result = subprocess.run([script, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "score-variants" in result.stdout
    # the installed package finds its configs wherever it is run from
    probe = "from genossm.paths import conf_dir; print(conf_dir())"
    located = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert located.returncode == 0, located.stderr
    assert located.stdout.strip().endswith(("conf", "_conf"))


def test_a_run_prints_genossm_lines_not_third_party_noise(tmp_path):
    model = save_tiny_model(tmp_path / "model")
    done = subprocess.run(
        [sys.executable, "-m", "genossm.cli", "score-variants", f"pretrained={model}",
         f"fasta={data_dir() / 'variants_chr20_slice.fa.gz'}", f"variants={data_dir() / 'variants_chr20_multiallelic.vcf'}",
         f"output={tmp_path / 'out.vcf.gz'}", "progress=false", f"cache_dir={tmp_path / 'cache'}"],
        capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout + done.stderr
    assert "alleles" in text  # genossm's own summary is there
    for noise in ("litlogger", "Tip:", "LeafSpec", "IterableDataset"):
        assert noise not in text, noise
    lines = [line for line in text.splitlines() if line.strip()]
    assert all(a != b for a, b in zip(lines, lines[1:])), "a line printed twice"
    assert sum("GPU available" in line for line in lines) <= 1
