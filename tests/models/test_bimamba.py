"""BiMambaLM: RC equivariance, direction mirroring, chunked inference, gradients, config checks."""

import math

import pytest
import torch
import torch.nn.functional as F

from genossm.data.tokenizer import reverse_complement
from genossm.errors import GenossmError
from genossm.models import BiMambaConfig, BiMambaLM
from genossm.models.bimamba import BiMambaMixer
from genossm.models.mamba import SSMBranch

from conftest import tiny

RC_VARIANTS = {
    "tied-add": dict(rc_equivariant=True),
    "tied-proj": dict(rc_equivariant=True, bidirectional_strategy="proj"),
    "untied-add": dict(rc_equivariant=True, tie_directions=False),
    "untied-proj": dict(rc_equivariant=True, tie_directions=False, bidirectional_strategy="proj"),
}
ALL_VARIANTS = {**RC_VARIANTS, "plain": dict(), "plain-untied-proj": dict(tie_directions=False,
                bidirectional_strategy="proj"), "causal": dict(bidirectional=False)}


def tokens(batch=2, length=29, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 5, (batch, length), generator=g)  # A, C, G, T and N


def rc_error(model, x):
    with torch.no_grad():
        return (model(reverse_complement(x)) - model(x).flip(1).flip(-1)).abs().max().item()


@pytest.mark.parametrize("variant", RC_VARIANTS)
def test_rc_equivariance_is_exact(make_model, variant):
    model = make_model(**RC_VARIANTS[variant]).eval()
    x = tokens()
    assert rc_error(model, x) < 1e-5
    with torch.no_grad():
        pooled, pooled_rc = model.embed(x), model.embed(reverse_complement(x))
        per_pos, per_pos_rc = model.embed(x, pooling=None), model.embed(reverse_complement(x), pooling=None)
    assert pooled.shape == (2, model.embed_dim)
    torch.testing.assert_close(pooled_rc, pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(per_pos_rc, per_pos.flip(1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", ["plain", "plain-untied-proj"])
def test_rc_check_fails_without_the_equivariant_option(make_model, variant):
    model = make_model(**ALL_VARIANTS[variant]).eval()
    assert rc_error(model, tokens()) > 1e-3


def test_rc_check_fails_when_the_rc_strand_skips_the_mirror(make_model):
    model = make_model(**RC_VARIANTS["untied-proj"]).eval()
    for layer in model.layers:
        layer.mixer.mirror_invariant = True  # both strands through the unmirrored mixer: breaks the symmetry
    assert rc_error(model, tokens()) > 1e-3


@pytest.mark.parametrize("variant", ["tied-add", "tied-proj", "untied-add", "untied-proj"])
def test_mirrored_mixer_is_the_flipped_mixer(variant):
    torch.manual_seed(0)
    mixer = BiMambaMixer(tiny(scan_backend="reference", **RC_VARIANTS[variant])).double()
    h = torch.randn(2, 23, 16, dtype=torch.float64)
    torch.testing.assert_close(mixer(h.flip(1), mirror=True), mixer(h).flip(1))


def test_reverse_scan_equals_forward_scan_of_the_flipped_sequence():
    torch.manual_seed(0)
    branch = SSMBranch(16, 32, 4, 4, 1)
    h = torch.randn(2, 19, 16)
    y_rev = branch.run(h, "anticausal", reverse=True, backend=tiny().scan_backend)
    y_ref = branch.run(h.flip(1), "causal", reverse=False, backend="reference").flip(-1)
    torch.testing.assert_close(y_rev, y_ref, atol=1e-5, rtol=1e-5)


def test_conv_modes_match_a_loop():
    torch.manual_seed(0)
    branch = SSMBranch(8, 6, 4, 4, 1).double()
    x = torch.randn(1, 6, 11, dtype=torch.float64)
    w, b = branch.conv.weight[:, 0, :], branch.conv.bias  # (E, K)
    K, L = w.shape[1], x.shape[-1]

    def at(t):
        return x[..., t] if 0 <= t < L else torch.zeros_like(x[..., 0])

    causal = torch.stack([sum(w[:, k] * at(t - (K - 1 - k)) for k in range(K)) + b for t in range(L)], -1)
    anti = torch.stack([sum(w[:, k] * at(t + (K - 1 - k)) for k in range(K)) + b for t in range(L)], -1)
    sym = causal + anti - b[:, None] - w[:, K - 1, None] * x  # both sides, centre tap once
    for mode, expected in [("causal", causal), ("anticausal", anti), ("symmetric", sym)]:
        torch.testing.assert_close(branch.conv_act(x, mode), F.silu(expected))


@pytest.mark.parametrize("variant", ["tied-add", "untied-proj", "plain", "causal"])
@pytest.mark.parametrize("chunk_len", [1, 6, 29, 64])
def test_chunked_inference_equals_one_full_pass(make_model, variant, chunk_len):
    model = make_model(dtype=torch.float64, **ALL_VARIANTS[variant]).eval()
    x = tokens(length=29)
    with torch.no_grad():
        full = model.hidden(x)
    chunked = model.hidden_chunked(x, chunk_len)
    torch.testing.assert_close(chunked, full, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(model(x, chunk_len=chunk_len), model(x).detach(), atol=1e-10, rtol=1e-10)


def test_chunked_inference_in_float32(make_model):
    model = make_model(**RC_VARIANTS["tied-add"]).eval()
    x = tokens(length=50)
    with torch.no_grad():
        torch.testing.assert_close(model.hidden_chunked(x, 16), model.hidden(x), atol=1e-5, rtol=1e-5)


def test_causal_model_does_not_see_the_future_and_bidirectional_does(make_model):
    x = tokens(batch=1, length=20)
    y = x.clone()
    y[0, 12:] = (y[0, 12:] + 1) % 4
    causal = make_model(**ALL_VARIANTS["causal"]).eval()
    with torch.no_grad():
        torch.testing.assert_close(causal(y)[:, :12], causal(x)[:, :12])
        assert (causal(y)[:, 12:] - causal(x)[:, 12:]).abs().max() > 1e-4
    bidir = make_model(**ALL_VARIANTS["plain"]).eval()
    with torch.no_grad():
        assert (bidir(y)[:, 0] - bidir(x)[:, 0]).abs().max() > 1e-5  # the reverse scan carries it back


@pytest.mark.parametrize("variant", list(ALL_VARIANTS))
def test_gradients_reach_every_parameter(make_model, variant):
    model = make_model(**ALL_VARIANTS[variant]).train()
    x = tokens(length=17)
    F.cross_entropy(model(x).reshape(-1, 4), x.clamp(max=3).reshape(-1)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_gradient_checkpointing_gives_the_same_gradients(make_model):
    x = tokens(length=17)
    grads = []
    for flag in (False, True):
        model = make_model(gradient_checkpointing=flag, **RC_VARIANTS["untied-proj"]).train()
        model(x).square().mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, msg=name)


def test_bad_config_values_raise_clear_errors():
    with pytest.raises(GenossmError, match="bidirectional_strategy"):
        BiMambaConfig(bidirectional_strategy="concat")
    with pytest.raises(GenossmError, match="rc_equivariant needs bidirectional"):
        BiMambaConfig(bidirectional=False, rc_equivariant=True)
    with pytest.raises(GenossmError, match="d_model"):
        BiMambaConfig(d_model=0)
    with pytest.raises(GenossmError, match=r"my.yaml: unknown model config field\(s\) \['n_layer'\]"):
        BiMambaConfig.from_dict({"n_layer": 3}, source="my.yaml")
    with pytest.raises(GenossmError, match="bidirectional"):
        BiMambaLM(tiny()).step(torch.zeros(1, dtype=torch.long))


def test_shipped_configs_build_with_their_sizes():
    from genossm.config import model_config

    counts = {}
    for name in ("tiny", "causal_tiny", "small", "base"):  # composed as Hydra composes them
        counts[name] = BiMambaLM(BiMambaConfig(**model_config(name))).num_parameters()
    print("parameters:", counts)
    assert counts["tiny"] < 1_000_000
    assert 6_000_000 < counts["small"] < 9_000_000
    assert counts["base"] > 4 * counts["small"]
    # a Mamba layer has about 6.25 d_model^2 weights (in_proj 4, out_proj 2, x/dt projections)
    assert math.isclose(counts["small"], 16 * 6.25 * 256**2, rel_tol=0.1)
