"""pretrained=hf:ORG/NAME[@REVISION]: resolution through huggingface_hub's cache, and each error in one line.

The cache is a Hub-style folder built here (HF_HOME), read with HF_HUB_OFFLINE=1 in a fresh process, as a
user's machine without network would; the answers only the Hub can give (no such repository, revision,
file; gated) are simulated by replacing the download function.
"""

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from genossm.errors import GenossmError
from genossm.models.hub import model_path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "caduceus"
PS = "kuleshov-group/caduceus-ps_seqlen-131k_d_model-256_n_layer-16"
PLANT = "kuleshov-group/PlantCaduceus_l20"
COMMIT_A, COMMIT_B, COMMIT_P, COMMIT_X = ("a" * 40, "b" * 40, "c" * 40, "d" * 40)


def add_repo(hf_home: Path, repo: str, snapshots: dict[str, Path | dict], refs: dict[str, str]) -> None:
    """A repository in the Hub cache layout: models--ORG--NAME/{refs/<ref>, snapshots/<commit>/<files>}."""
    root = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    for commit, source in snapshots.items():
        snap = root / "snapshots" / commit
        if isinstance(source, Path):
            shutil.copytree(source, snap)
        else:
            snap.mkdir(parents=True)
            for name, text in source.items():
                (snap / name).write_text(text)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    for ref, commit in refs.items():
        (root / "refs" / ref).write_text(commit)


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("hf_home")
    add_repo(home, PS, {COMMIT_A: FIXTURES / "caduceus_ps", COMMIT_B: FIXTURES / "caduceus_ph"},
             {"main": COMMIT_A, "v1": COMMIT_B})
    add_repo(home, PLANT, {COMMIT_P: FIXTURES / "plantcaduceus_bin"}, {"main": COMMIT_P})  # .bin only
    add_repo(home, "org/bert", {COMMIT_X: {"config.json": json.dumps({"model_type": "bert"}),
                                           "model.safetensors": ""}}, {"main": COMMIT_X})
    return home


RESOLVE = """
import json, sys
from genossm.errors import GenossmError
from genossm.models import from_pretrained, load_extra
out = {}
for spec in sys.argv[1:]:
    try:
        model = from_pretrained(spec)
        out[spec] = {"d_model": model.config.d_model, "extra": load_extra(spec)}
    except GenossmError as err:
        out[spec] = {"error": str(err)}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def resolved(hf_home):
    specs = [f"hf:{PS}", f"hf:{PS}@{COMMIT_B}", f"hf:{PS}@v1", f"hf:{PS}@nosuch", f"hf:{PLANT}",
             "hf:someone/absent", "hf:org/bert", "hf:no-slash", "hf:a/b@"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")
    run = subprocess.run([sys.executable, "-c", RESOLVE, *specs], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_by_name_reads_the_main_ref(resolved):
    got = resolved[f"hf:{PS}"]
    assert got["d_model"] == 32
    assert got["extra"]["source"] == f"hf:{PS}@{COMMIT_A}"
    assert got["extra"]["hub_repo"] == PS and got["extra"]["train_window_len"] == 131072


def test_by_revision_commit_or_branch(resolved):
    assert resolved[f"hf:{PS}@{COMMIT_B}"]["d_model"] == 40  # the caduceus_ph snapshot
    assert resolved[f"hf:{PS}@v1"]["d_model"] == 40
    assert resolved[f"hf:{PS}@v1"]["extra"]["source"] == f"hf:{PS}@{COMMIT_B}"


def test_a_repository_with_only_pytorch_model_bin(resolved):
    got = resolved[f"hf:{PLANT}"]
    assert got["d_model"] == 24 and got["extra"]["train_window_len"] == 512


@pytest.mark.parametrize("spec,message", [
    (f"hf:{PS}@nosuch", "not in the Hugging Face cache and HF_HUB_OFFLINE is set; fetch it where the Hub can be "
                        f"reached (huggingface-cli download {PS} --revision nosuch)"),
    ("hf:someone/absent", "not in the Hugging Face cache and HF_HUB_OFFLINE is set"),
    ("hf:org/bert", "model_type 'bert' is not one genossm can run"),
    ("hf:no-slash", "not a Hub model; write hf:ORG/NAME or hf:ORG/NAME@REVISION"),
    ("hf:a/b@", "not a Hub model"),
])
def test_offline_errors(resolved, spec, message):
    assert message in resolved[spec]["error"]
    assert resolved[spec]["error"].startswith(spec)


def _hub_error(kind: str):
    import huggingface_hub.errors as errors

    response = types.SimpleNamespace(headers={}, request=None, status_code=404)
    return getattr(errors, kind)(f"{kind} (simulated)", response=response)


@pytest.mark.parametrize("kind,message", [
    ("RepositoryNotFoundError", "no such repository on the Hub (org/name), or it is private"),
    ("RevisionNotFoundError", "revision 'v9' not found in org/name"),
    ("GatedRepoError", "org/name is gated; accept its terms on the Hub and log in"),
    ("RemoteEntryNotFoundError", "org/name has no config.json"),
])
def test_answers_of_the_hub(monkeypatch, kind, message):
    import huggingface_hub

    def download(repo, filename, revision=None, **kwargs):
        raise _hub_error(kind)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with pytest.raises(GenossmError) as err:
        model_path("hf:org/name@v9")
    assert message in str(err.value)


def test_a_repository_without_weights(monkeypatch, tmp_path):
    import huggingface_hub

    (tmp_path / "config.json").write_text("{}")

    def download(repo, filename, revision=None, **kwargs):
        if filename == "config.json":
            return str(tmp_path / "config.json")
        raise _hub_error("RemoteEntryNotFoundError")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with pytest.raises(GenossmError, match="has config.json but neither model.safetensors nor pytorch_model.bin"):
        model_path("hf:org/name")
