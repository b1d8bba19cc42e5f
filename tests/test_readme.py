"""Every ``genossm`` command line of the README and of the pages in ``docs/``, as a user would paste it into bash,
composes (Hydra's override grammar accepts it, the groups and keys exist, every value resolves), so an example
can never break again; and every link between them leads somewhere."""

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from genossm.cli import WORKFLOWS
from genossm.paths import conf_dir

README = Path(__file__).resolve().parents[1] / "README.md"
DOCS = sorted((README.parent / "docs").glob("*.md"))
FLAGS = {"-m", "--multirun", "--cfg", "job", "--help", "-h"}


def markdown_commands(path: Path) -> list[str]:
    """The ``genossm ...`` lines of a Markdown file's code blocks (continuation lines joined) and inline code
    spans."""
    commands, in_block, pending = [], False, ""
    for line in path.read_text().splitlines():
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
    return commands


def readme_commands() -> list[str]:
    """The ``genossm ...`` lines of the README, and the example lines in the comments of ``conf/*.yaml``."""
    commands = markdown_commands(README)
    for path in sorted(Path(conf_dir()).rglob("*.yaml")):
        for line in path.read_text().splitlines():
            m = re.match(r"#\s+(genossm \w[\w-]* .*?)(\s+#.*)?$", line)
            if m and "=" in m[1] and "<" not in m[1] and " [" not in m[1]:  # not a synopsis
                commands.append(m[1])
    return commands


def docs_commands() -> list[str]:
    """The ``genossm ...`` lines of every page in ``docs/``."""
    return [command for path in DOCS for command in markdown_commands(path)]


def test_the_readme_has_commands_for_every_workflow():
    words = {shlex.split(c, comments=True)[1] for c in readme_commands()}
    assert set(WORKFLOWS) <= words | {"models"}, set(WORKFLOWS) - words


def test_the_docs_have_pages_with_commands():
    assert DOCS, "docs/ holds no page"
    assert {shlex.split(c, comments=True)[1] for c in docs_commands()} >= set(WORKFLOWS) - {"models"}


@pytest.mark.parametrize("command", readme_commands() + docs_commands())
def test_readme_command_composes(command):
    argv = shlex.split(command, comments=True)  # what bash hands genossm
    assert argv[0] == "genossm"
    if len(argv) == 1 or argv[1] in ("models", "--help", "-h", "--version") or "..." in argv:
        return
    workflow = argv[1]
    assert workflow in WORKFLOWS, f"unknown workflow in README or docs/: {command}"
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


def heading_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)  # a '# comment' in a code block is no heading
    return {heading_anchor(m[1]) for m in re.finditer(r"^#+ (.*)$", text, flags=re.M)}


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_every_link_leads_somewhere(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        assert path.exists(), f"{page.name}: link to {target}: no such file"
        if anchor:
            assert anchor in anchors(path), f"{page.name}: link to {target}: no such heading"


def test_the_readme_links_every_docs_page():
    links = set(re.findall(r"\]\((docs/[^)#\s]+)", README.read_text()))
    assert {f"docs/{p.name}" for p in DOCS} <= links, {f"docs/{p.name}" for p in DOCS} - links
    for page in DOCS:
        assert "](../README.md" in page.read_text(), f"{page.name} does not link back to the README"


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
