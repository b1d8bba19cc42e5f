"""The model's position-major CPU path (fused C scan and conv) against the (batch, channels, L) path, and
bf16 autocast against float32."""

import pytest
import torch

from genossm.models import cpu_bf16_supported
from genossm.ops.selective_scan import cpu



pytestmark = pytest.mark.skipif(not cpu.available(), reason=f"C kernel unavailable: {cpu.unavailable_reason()}")

VARIANTS = {
    "tied-add-rc": dict(rc_equivariant=True),
    "tied-proj": dict(bidirectional_strategy="proj"),
    "tied-proj-rc": dict(bidirectional_strategy="proj", rc_equivariant=True),
    "untied-add": dict(tie_directions=False),
    "untied-proj-rc": dict(tie_directions=False, bidirectional_strategy="proj", rc_equivariant=True),
    "causal": dict(bidirectional=False),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_position_major_path_matches_the_chunked_path(make_model, variant):
    model = make_model(d_model=32, d_state=8, **VARIANTS[variant])
    tokens = torch.randint(0, 4, (2, 77), generator=torch.Generator().manual_seed(0))
    outs, grads = {}, {}
    for backend in ("chunked", "auto"):  # auto: the fused CPU kernel, position-major
        model.set_scan_backend(backend)
        model.zero_grad()
        logits = model(tokens)
        (logits * torch.linspace(-1, 1, logits.numel()).view_as(logits)).sum().backward()
        outs[backend] = logits.detach()
        grads[backend] = {n: p.grad.clone() for n, p in model.named_parameters()}
    torch.testing.assert_close(outs["auto"], outs["chunked"], rtol=1e-5, atol=1e-5)
    for name, g in grads["chunked"].items():
        torch.testing.assert_close(grads["auto"][name], g, rtol=1e-4, atol=1e-5, msg=name)


def test_position_major_path_is_the_default_on_cpu(make_model):
    model = make_model()
    branch = model.layers[0].mixer.branches[0]
    assert branch.position_major(torch.zeros(1), "auto")
    assert not branch.position_major(torch.zeros(1), "chunked")


def test_bf16_autocast_stays_close_to_float32(make_model):
    # bf16 matmuls (8-bit mantissa), float32 scan state and residual stream: logits and gradients within a
    # few per cent of float32
    model = make_model(d_model=64, n_layers=2, d_state=16, rc_equivariant=True)
    tokens = torch.randint(0, 4, (2, 200), generator=torch.Generator().manual_seed(1))
    results = {}
    for bf16 in (False, True):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(tokens)
        assert logits.dtype == torch.float32 or bf16
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, 4), tokens.reshape(-1))
        loss.backward()
        results[bf16] = (logits.float().detach(), loss.item(),
                         torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    (l32, loss32, g32), (l16, loss16, g16) = results[False], results[True]
    assert (l16 - l32).abs().max() <= 0.03 * l32.abs().max() + 1e-3
    assert abs(loss16 - loss32) <= 0.01 * abs(loss32)
    cos = torch.nn.functional.cosine_similarity(g16, g32, dim=0)
    assert cos > 0.99, cos
    assert torch.isfinite(g16).all()


def test_cpu_bf16_supported_reads_the_cpu_flags():
    assert isinstance(cpu_bf16_supported(), bool)
    flags = open("/proc/cpuinfo").read() if __import__("os").path.exists("/proc/cpuinfo") else ""
    assert cpu_bf16_supported() == any(f in flags.split() for f in ("amx_bf16", "avx512_bf16", "bf16"))
