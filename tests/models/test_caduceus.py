"""Caduceus / PlantCaduceus checkpoints in genossm: the same A/C/G/T log-probabilities as the original code.

The fixtures (tests/fixtures/caduceus, see its README) are small random checkpoints written by the original
modeling code in the exact Hub layouts, with that code's logits and hidden states on five sequences.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from genossm.errors import GenossmError
from genossm.models import BiMambaLM, from_pretrained, load_extra, save_pretrained
from genossm.models import caduceus
from genossm.models.hub import load_state
from genossm.vocab import COMPLEMENT, MASK

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "caduceus"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
LAYOUTS = ["caduceus_ps", "caduceus_ph", "plantcaduceus", "plantcaduceus_bin"]
SEQUENCES = ["seq64", "seq300_n", "seq300_n_rc", "seq1000_n", "seq64_mask"]
RC_EQUIVARIANT = {"caduceus_ps": True, "caduceus_ph": False, "plantcaduceus": True, "plantcaduceus_bin": True}
TOL = 1e-4
LETTERS = {"A": 0, "C": 1, "G": 2, "T": 3, "N": 4}


def genossm_tokens(name: str) -> torch.Tensor:
    """The manifest's sequence as genossm token ids (1, L); seq64_mask has <mask> at the manifest's positions."""
    if name == "seq64_mask":
        tokens = genossm_tokens("seq64")
        tokens[0, MANIFEST["mask_positions"]] = MASK
        return tokens
    return torch.tensor([[LETTERS[c] for c in MANIFEST["sequences"][name]]])


def reference_logprobs(layout: str, seq: str) -> torch.Tensor:
    """The original model's log-softmax over its A, C, G, T logits, (L, 4) float64."""
    ref = load_file(str(FIXTURES / "reference" / layout / "reference_logits.safetensors"))
    columns = MANIFEST["models"][layout]["base_columns_ACGT"]
    return F.log_softmax(ref[f"logits.{seq}"][0].double()[:, columns], dim=-1)


def logprobs(model: BiMambaLM, tokens: torch.Tensor, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return F.log_softmax(model(tokens, **kwargs)[0].double(), dim=-1)


@pytest.fixture(scope="module")
def models():
    return {layout: from_pretrained(FIXTURES / layout) for layout in LAYOUTS}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seq", SEQUENCES)
def test_logprobs_equal_the_original_code(models, layout, seq):
    model = models[layout]
    tokens = genossm_tokens(seq)
    # genossm's tokens reach the checkpoint's embedding as the ids the original tokenizer gives
    ref_ids = load_file(str(FIXTURES / "reference" / layout / "reference_logits.safetensors"))[f"input_ids.{seq}"]
    assert torch.equal(model.token_rows[tokens], ref_ids)
    err = (logprobs(model, tokens) - reference_logprobs(layout, seq)).abs().max().item()
    assert err < TOL, f"{layout} {seq}: max |Δ log p| = {err:.2e}"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_hidden_states_equal_the_original_code(models, layout):
    """The final hidden states too (what embed and fine-tuning read). The original keeps the RC strand
    channel-reversed beside the forward one; genossm keeps it in the forward strand's channel order."""
    model = models[layout]
    ref = load_file(str(FIXTURES / "reference" / layout / "reference_hidden.safetensors"))
    for seq in ("seq300_n", "seq1000_n"):
        with torch.no_grad():
            ours = model.hidden(genossm_tokens(seq))[0]
        if model.config.rc_equivariant:
            fwd, rc = ours.chunk(2, dim=-1)
            ours = torch.cat([fwd, rc.flip(-1)], dim=-1)
        assert (ours - ref[f"hidden.{seq}"][0]).abs().max().item() < TOL


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_scan_path_gives_the_same_logprobs(models, layout):
    """The specification loop, the chunked scan and long-sequence inference in chunks of 128 agree with the
    original code as well as the default (fused CPU) path does."""
    model = models[layout]
    tokens, ref = genossm_tokens("seq1000_n"), reference_logprobs(layout, "seq1000_n")
    assert (logprobs(model, tokens, chunk_len=128) - ref).abs().max().item() < TOL
    for backend in ("reference", "chunked"):
        model.set_scan_backend(backend)
        try:
            assert (logprobs(model, tokens) - ref).abs().max().item() < TOL, backend
        finally:
            model.set_scan_backend("auto")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_reverse_complement(models, layout):
    """PS and PlantCaduceus are exactly RC-equivariant in genossm as in the original; Ph is not (its authors
    average both strands, as strands=auto does for it)."""
    model = models[layout]
    x = genossm_tokens("seq300_n")
    rc = torch.from_numpy(COMPLEMENT[x.numpy()]).long().flip(-1)
    fwd, rev = logprobs(model, x), logprobs(model, rc)
    mirrored = rev.flip(0).flip(-1)  # position L-1-i, base 3-b
    gap = (fwd - mirrored).abs().max().item()
    if RC_EQUIVARIANT[layout]:
        assert gap < 1e-5
    else:
        assert gap > 0.1
    assert model.config.rc_equivariant == RC_EQUIVARIANT[layout]


def test_safetensors_and_bin_layouts_load_the_same_weights(models):
    a, b = models["plantcaduceus"].state_dict(), models["plantcaduceus_bin"].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- one option mapped wrongly must fail the comparison ---------------------------------------------------------
def _variant(layout: str, change: str) -> BiMambaLM:
    """The layout's model with one part of the mapping deliberately wrong."""
    folder = FIXTURES / layout
    hf = json.loads((folder / "config.json").read_text())
    good = from_pretrained(folder)
    values = good.config.to_dict()
    state = {k: v.clone() for k, v in good.state_dict().items()}
    if change == "no strand swap":
        values["strand_swap"] = False
    elif change == "bases in another order":
        ids = list(values["token_ids"])
        ids[0], ids[1] = ids[1], ids[0]
        values["token_ids"] = ids
    elif change == "N read as padding":
        values["token_ids"] = [*values["token_ids"][:4], values["token_ids"][5], *values["token_ids"][5:]]
    elif change == "directions swapped":
        for k in [k for k in state if ".branches.0." in k and "in_proj" not in k]:
            other = k.replace(".branches.0.", ".branches.1.")
            state[k], state[other] = state[other], state[k]
    elif change == "dt bias as a plain bias":  # softplus(W dt) + b instead of softplus(W dt + b)
        for k in [k for k in state if k.endswith("dt_bias")]:
            state[k] = torch.zeros_like(state[k])
    elif change == "norm weights dropped":
        for k in [k for k in state if k.endswith("norm.weight")]:
            state[k] = torch.ones_like(state[k])
    else:
        raise AssertionError(change)
    assert hf["model_type"] == "caduceus"
    model = BiMambaLM(values)
    load_state(model, state, folder)
    return model.eval()


CHANGES = ["bases in another order", "N read as padding", "directions swapped", "dt bias as a plain bias",
           "norm weights dropped"]


@pytest.mark.parametrize("layout,change", [(lay, c) for lay in ("caduceus_ps", "caduceus_ph", "plantcaduceus")
                                           for c in CHANGES] + [("caduceus_ps", "no strand swap"),
                                                                ("plantcaduceus", "no strand swap")])
def test_a_wrong_mapping_fails_the_comparison(layout, change):
    model = _variant(layout, change)
    worst = max((logprobs(model, genossm_tokens(s)) - reference_logprobs(layout, s)).abs().max().item()
                for s in ("seq300_n", "seq64_mask"))
    assert worst > 100 * TOL, f"{change}: the comparison did not notice ({worst:.2e})"


# ---- saving, extra, errors ----------------------------------------------------------------------------------------
def test_an_imported_model_saves_and_reloads_as_a_genossm_model(models, tmp_path):
    model = models["caduceus_ps"]
    folder = save_pretrained(model, tmp_path / "saved", extra={"source": "test"})
    again = from_pretrained(folder)
    assert again.config == model.config
    x = genossm_tokens("seq300_n")
    assert torch.equal(logprobs(again, x), logprobs(model, x))


def test_extra_records_the_source(tmp_path):
    extra = load_extra(FIXTURES / "plantcaduceus")
    assert extra["imported_from"] == "caduceus" and extra["source"] == str((FIXTURES / "plantcaduceus").resolve())
    assert "train_window_len" not in extra  # an unknown checkpoint: no training context claimed
    clone = tmp_path / "PlantCaduceus_l20"  # a git clone of a known repository is recognised by its name
    shutil.copytree(FIXTURES / "plantcaduceus", clone)
    extra = load_extra(clone)
    assert extra["hub_repo"] == "kuleshov-group/PlantCaduceus_l20" and extra["train_window_len"] == 512


def _copy(layout: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / layout, tmp_path / layout))


def _edit_config(folder: Path, **changes):
    path = folder / "config.json"
    hf = json.loads(path.read_text())
    for key, value in changes.items():
        if isinstance(value, dict):
            hf[key] = {**hf[key], **value}
        else:
            hf[key] = value
    path.write_text(json.dumps(hf))


def _edit_weights(folder: Path, edit):
    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


@pytest.mark.parametrize("case,expected", [
    ("model_type", "model_type 'bert' is not one genossm can run; it runs genossm's own models and model_type 'caduceus'"),
    ("missing tensor", "tensor 'layers.1.mixer.mamba_rev.x_proj.weight' is missing"),
    ("wrong shape", "layers.0.mixer.branches.0.A_log: (64, 8) in the file, (64, 16) from the config"),
    ("nan", "hold NaN or infinite values, first: layers.0.norm.weight"),
    ("bias", "ssm_cfg.bias: true"),
    ("layer norm", "rms_norm: false"),
    ("strategy", "bidirectional_strategy 'ew_multiply' is not supported"),
    ("mamba2", "ssm_cfg option(s) ['layer'] are not part of the Mamba (v1) layer"),
    ("complement", "complement_map sends A (id 7) to id 9"),
    ("bad type", "d_model must be int, got '32'"),
    ("no weights", "no weights (model.safetensors or pytorch_model.bin)"),
    ("extra tensor", "tensor(s) genossm does not know how to map, first: layers.0.mixer.extra"),
])
def test_clear_errors_name_the_file_and_the_problem(tmp_path, case, expected):
    folder = _copy("caduceus_ps", tmp_path)
    prefix = "caduceus.backbone."
    if case == "model_type":
        _edit_config(folder, model_type="bert")
    elif case == "missing tensor":
        _edit_weights(folder, lambda t: t.pop(prefix + "layers.1.mixer.submodule.mamba_rev.x_proj.weight"))
    elif case == "wrong shape":
        key = prefix + "layers.0.mixer.submodule.mamba_fwd.A_log"
        _edit_weights(folder, lambda t: t.__setitem__(key, t[key][:, :8].contiguous()))
    elif case == "nan":
        key = prefix + "layers.0.norm.weight"
        _edit_weights(folder, lambda t: t[key].__setitem__(3, float("nan")))
    elif case == "bias":
        _edit_config(folder, ssm_cfg={"bias": True})
    elif case == "layer norm":
        _edit_config(folder, rms_norm=False)
    elif case == "strategy":
        _edit_config(folder, bidirectional_strategy="ew_multiply")
    elif case == "mamba2":
        _edit_config(folder, ssm_cfg={"layer": "Mamba2"})
    elif case == "complement":
        cm = json.loads((folder / "config.json").read_text())["complement_map"]
        _edit_config(folder, complement_map={**cm, "7": 9})
    elif case == "bad type":
        _edit_config(folder, d_model="32")
    elif case == "no weights":
        (folder / "model.safetensors").unlink()
    elif case == "extra tensor":
        _edit_weights(folder, lambda t: t.__setitem__(prefix + "layers.0.mixer.extra", torch.ones(2)))
    with pytest.raises(GenossmError) as err:
        from_pretrained(folder)
    assert expected in str(err.value)
    assert str(folder) in str(err.value)


def test_bin_with_differing_tied_projection_is_refused(tmp_path):
    folder = _copy("plantcaduceus_bin", tmp_path)
    path = folder / "pytorch_model.bin"
    state = torch.load(path, weights_only=True)
    key = "backbone.layers.0.mixer.submodule.mamba_rev.in_proj.weight"
    state[key] = state[key] + 1  # a tensor of its own (torch.save kept the tie as one shared storage)
    torch.save(state, path)
    with pytest.raises(GenossmError, match="mamba_rev.in_proj.weight differs from the forward direction's"):
        from_pretrained(folder)


class _Payload:
    ran = False

    def __reduce__(self):
        return (_Payload.mark, ())

    @staticmethod
    def mark():
        _Payload.ran = True
        return {}


def test_bin_is_never_executed(tmp_path):
    """A pickle that would run code on load is refused (weights_only), and the code does not run."""
    folder = _copy("plantcaduceus_bin", tmp_path)
    torch.save({"backbone.norm_f.weight": _Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(GenossmError, match="cannot read the PyTorch weights"):
        from_pretrained(folder)
    assert not _Payload.ran


def test_truncated_bin_names_the_file(tmp_path):
    folder = _copy("plantcaduceus_bin", tmp_path)
    path = folder / "pytorch_model.bin"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(GenossmError, match="pytorch_model.bin: cannot read the PyTorch weights"):
        from_pretrained(folder)


def test_parameter_counts_of_the_published_configs():
    """The table genossm models prints: parameters of the published sizes, counted from their configs."""
    base = json.loads((FIXTURES / "caduceus_ps" / "config.json").read_text())
    plant = json.loads((FIXTURES / "plantcaduceus" / "config.json").read_text())
    sizes = {"kuleshov-group/caduceus-ps_seqlen-131k_d_model-256_n_layer-16": (base, 256, 16),
             "kuleshov-group/caduceus-ph_seqlen-131k_d_model-256_n_layer-16": ({**base, "rcps": False}, 256, 16),
             "kuleshov-group/PlantCaduceus_l20": (plant, 384, 20), "kuleshov-group/PlantCaduceus_l32": (plant, 1024, 32)}
    for repo, (hf, d_model, n_layer) in sizes.items():
        count = caduceus.parameter_count({**hf, "d_model": d_model, "n_layer": n_layer})
        assert count == caduceus.KNOWN_CHECKPOINTS[repo]["parameters"], repo
    # the published count of the Caduceus-Ph 131k file
    assert caduceus.KNOWN_CHECKPOINTS["kuleshov-group/caduceus-ph_seqlen-131k_d_model-256_n_layer-16"]["parameters"] == 7_725_312


def test_models_check_compares_with_the_original(models):
    """genossm models check's comparison, with the original code's stored logits standing in for the original."""
    from genossm.models import check

    model = models["caduceus_ph"]
    ref = load_file(str(FIXTURES / "reference" / "caduceus_ph" / "reference_logits.safetensors"))
    by_ids = {tuple(ref[f"input_ids.{s}"][0].tolist()): ref[f"logits.{s}"] for s in SEQUENCES}
    sequences = [(s, genossm_tokens(s)) for s in SEQUENCES]
    rows = check.compare(model, lambda ids: by_ids[tuple(ids[0].tolist())], sequences)
    assert [r["sequence"] for r in rows] == SEQUENCES and max(r["max_abs_diff"] for r in rows) < TOL
    # another checkpoint's logits: the check says so
    wrong = load_file(str(FIXTURES / "reference" / "caduceus_ps" / "reference_logits.safetensors"))
    rows = check.compare(model, lambda ids: wrong["logits.seq64"], [("seq64", genossm_tokens("seq64"))])
    assert rows[0]["max_abs_diff"] > 0.1
    # the sequences it draws: N runs, masks, and each one's reverse complement
    drawn = check.check_sequences((100,))
    assert [name for name, _ in drawn] == ["random_100", "random_100_rc"]
    x, rc = drawn[0][1][0], drawn[1][1][0]
    assert (x == MASK).sum() == 5 and (x == 4).sum() >= 10
    assert torch.equal(rc, torch.from_numpy(COMPLEMENT[x.numpy()[::-1].copy()]))


def test_models_check_without_transformers_says_what_to_install(monkeypatch, capsys):
    import sys

    from genossm import cli

    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(SystemExit) as done:
        cli.main(["models", "check", str(FIXTURES / "caduceus_ps"), "--device", "cpu"])
    assert done.value.code == 2
    assert "the check runs the original code: pip install transformers" in capsys.readouterr().err
