"""Every ``genossm`` command line of the README, as a user would paste it into bash, composes (Hydra's override
grammar accepts it, the groups and keys exist, every value resolves), so an example can never break again."""

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from genossm.cli import WORKFLOWS
from genossm.paths import conf_dir

README = Path(__file__).resolve().parents[1] / "README.md"
FLAGS = {"-m", "--multirun", "--cfg", "job", "--help", "-h"}


def readme_commands() -> list[str]:
    """The ``genossm ...`` lines of the README's code blocks (continuation lines joined) and inline code spans,
    and the example lines in the comments of ``conf/*.yaml``."""
    commands, in_block, pending = [], False, ""
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            in_block, pending = not in_block, ""
            continue
        if not in_block:
            commands += [span for span in re.findall(r"`(genossm [^`]+)`", line) if "=" in span]
            continue
        text = pending + line.strip()
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        for part in re.split(r"\s&&\s", text):
            if part.startswith("genossm "):
                commands.append(part)
    for path in sorted(Path(conf_dir()).rglob("*.yaml")):
        for line in path.read_text().splitlines():
            m = re.match(r"#\s+(genossm \w[\w-]* .*?)(\s+#.*)?$", line)
            if m and "=" in m[1] and "<" not in m[1] and " [" not in m[1]:  # not a synopsis
                commands.append(m[1])
    return commands


def test_the_readme_has_commands_for_every_workflow():
    words = {shlex.split(c, comments=True)[1] for c in readme_commands()}
    assert set(WORKFLOWS) <= words | {"models"}, set(WORKFLOWS) - words


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_composes(command):
    argv = shlex.split(command, comments=True)  # what bash hands genossm
    assert argv[0] == "genossm"
    if len(argv) == 1 or argv[1] in ("models", "--help", "-h", "--version") or "..." in argv:
        return
    workflow = argv[1]
    assert workflow in WORKFLOWS, f"unknown workflow in README: {command}"
    overrides = [a for a in argv[2:] if a not in FLAGS]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name=workflow.replace("-", "_"), overrides=overrides)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


def test_the_documented_quoting_reaches_genossm_intact():
    from genossm.data.variants import parse_region

    argv = shlex.split("""genossm score-variants 'region="20:421,801-422,800"' 'contigs="chr[0-9XY]+"'""")
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="score_variants", overrides=argv[2:3])
        icfg = compose(config_name="inspect", overrides=argv[3:])
    assert parse_region(cfg.region) == ("20", 421800, 422800)
    assert icfg.contigs == "chr[0-9XY]+"


RUNNABLE = [  # README commands that need nothing outside the repository, run as pasted (outputs sent to tmp)
    ("genossm inspect", []),
    ("genossm pretrain", []),
    ("genossm score-variants pretrained=bundled:human_chr20 fasta=data/variants_chr20_slice.fa.gz "
     "variants=data/variants_chr20_indels_1000g.vcf.gz window_len=256 output=scored.vcf.gz", []),
    ("genossm pretrain trainer=ddp trainer.accelerator=cpu trainer.devices=2 trainer.precision=32-true",
     ["trainer.max_steps=4"]),  # the DDP example, shortened
]


def test_the_runnable_commands_are_in_the_readme():
    commands = {" ".join(shlex.split(c, comments=True)) for c in readme_commands()}
    for command, _ in RUNNABLE:
        assert command in commands, command


@pytest.mark.slow
@pytest.mark.parametrize("command,extra", RUNNABLE, ids=[c.split()[1] + str(i) for i, (c, _) in enumerate(RUNNABLE)])
def test_readme_command_runs(command, extra, tmp_path):
    import os
    import subprocess
    import sys

    argv = shlex.split(command)
    args = [a for a in argv[1:] if not a.startswith("output=")]
    out = tmp_path / ("scored.vcf.gz" if argv[1] == "score-variants" else "run")
    if argv[1] != "inspect":
        args.append(f"output={out}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "genossm.cli", *args, *extra], capture_output=True, text=True,
                          cwd=README.parent, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    if argv[1] == "score-variants":
        import pysam

        with pysam.VariantFile(str(out)) as vcf:
            records = list(vcf)
        assert len(records) == 194 and all("GENOSSM_LLR" in r.info for r in records)
        assert out.with_name(out.name + ".tbi").exists()
    elif argv[1] == "pretrain":
        assert (out / "model" / "model.safetensors").exists() and "bits per base" in done.stdout
    else:
        assert "NC_000932.1" in done.stdout
