"""The reference scan against numbers worked out by hand and against the closed form for constant inputs."""

import math

import pytest
import torch

from genossm.ops.selective_scan.reference import selective_scan_ref


def silu(x):
    return x / (1 + math.exp(-x))


def softplus(x):
    return math.log1p(math.exp(x))


def scalar_inputs():
    # one batch, one channel, one state, three positions
    u = [1.0, -1.0, 2.0]
    delta = [1.0, 2.0, 0.5]
    B = [1.0, 2.0, 3.0]
    C = [0.5, 1.0, 2.0]
    A, D = -0.5, 0.3
    t = lambda v: torch.tensor(v, dtype=torch.float32).view(1, 1, -1)  # noqa: E731
    return u, delta, B, C, A, D, (t(u), t(delta), torch.tensor([[A]]), t(B), t(C), torch.tensor([D]))


def test_three_steps_by_hand():
    u, delta, B, C, A, D, (tu, tdelta, tA, tB, tC, tD) = scalar_inputs()
    h1 = delta[0] * B[0] * u[0]  # = 1
    h2 = math.exp(delta[1] * A) * h1 + delta[1] * B[1] * u[1]  # = e^-1 - 4
    h3 = math.exp(delta[2] * A) * h2 + delta[2] * B[2] * u[2]  # = e^-0.25 (e^-1 - 4) + 3
    expected = [C[0] * h1 + D * u[0], C[1] * h2 + D * u[1], C[2] * h3 + D * u[2]]
    out, last = selective_scan_ref(tu, tdelta, tA, tB, tC, tD, return_last_state=True)
    assert out.flatten().tolist() == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert last.item() == pytest.approx(h3, rel=1e-6)
    assert h3 == pytest.approx(math.exp(-0.25) * (math.exp(-1) - 4) + 3)


def test_three_steps_reverse_with_initial_state_by_hand():
    u, delta, B, C, A, D, (tu, tdelta, tA, tB, tC, tD) = scalar_inputs()
    h0 = 0.7
    h3 = math.exp(delta[2] * A) * h0 + delta[2] * B[2] * u[2]
    h2 = math.exp(delta[1] * A) * h3 + delta[1] * B[1] * u[1]
    h1 = math.exp(delta[0] * A) * h2 + delta[0] * B[0] * u[0]
    expected = [C[0] * h1 + D * u[0], C[1] * h2 + D * u[1], C[2] * h3 + D * u[2]]
    out, last = selective_scan_ref(
        tu, tdelta, tA, tB, tC, tD, return_last_state=True, reverse=True, initial_state=torch.tensor([[[h0]]])
    )
    assert out.flatten().tolist() == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert last.item() == pytest.approx(h1, rel=1e-6)  # reverse ends at position 0


def test_two_steps_gate_bias_softplus_by_hand():
    u, delta, B, C, A, D, (tu, tdelta, tA, tB, tC, tD) = scalar_inputs()
    bias, z = -0.2, [0.4, -1.5]
    dt = [softplus(delta[0] + bias), softplus(delta[1] + bias)]
    h1 = dt[0] * B[0] * u[0]
    h2 = math.exp(dt[1] * A) * h1 + dt[1] * B[1] * u[1]
    expected = [(C[0] * h1 + D * u[0]) * silu(z[0]), (C[1] * h2 + D * u[1]) * silu(z[1])]
    out = selective_scan_ref(
        tu[..., :2], tdelta[..., :2], tA, tB[..., :2], tC[..., :2], tD, torch.tensor([[z]]),
        torch.tensor([bias]), True,
    )
    assert out.flatten().tolist() == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_two_states_by_hand():
    # state 2: y sums C·h over the states, each state with its own A and B, C entries
    A = torch.tensor([[-1.0, -0.1]])
    u = torch.tensor([[[2.0, 1.0]]])
    delta = torch.tensor([[[0.5, 0.25]]])
    B = torch.tensor([[[1.0, -1.0], [3.0, 0.5]]])  # (batch, state, length)
    C = torch.tensor([[[1.0, 2.0], [-1.0, 4.0]]])
    h1 = [0.5 * 1.0 * 2.0, 0.5 * 3.0 * 2.0]
    h2 = [math.exp(-0.25) * h1[0] + 0.25 * -1.0 * 1.0, math.exp(-0.025) * h1[1] + 0.25 * 0.5 * 1.0]
    expected = [1.0 * h1[0] - 1.0 * h1[1], 2.0 * h2[0] + 4.0 * h2[1]]
    out = selective_scan_ref(u, delta, A, B, C)
    assert out.flatten().tolist() == pytest.approx(expected, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("with_initial_state", [False, True])
def test_constant_inputs_closed_form(with_initial_state):
    # constant Δ, B, u: h_t = a^t h_0 + b (1 - a^t) / (1 - a) with a = exp(ΔA), b = Δ B u, t = 1..L
    torch.manual_seed(0)
    batch, dim, state, length = 2, 3, 4, 40
    A = -torch.rand(dim, state) - 0.05
    dt, Bv, uv = 0.3, 0.8, 1.5
    Cv = torch.randn(batch, state)
    D = torch.randn(dim)
    h0 = torch.randn(batch, dim, state) if with_initial_state else torch.zeros(batch, dim, state)
    u = torch.full((batch, dim, length), uv)
    delta = torch.full((batch, dim, length), dt)
    B = torch.full((batch, state, length), Bv)
    C = Cv[:, :, None].expand(batch, state, length).contiguous()
    out, last = selective_scan_ref(
        u, delta, A, B, C, D, return_last_state=True, initial_state=h0 if with_initial_state else None
    )
    a = torch.exp(dt * A).double()
    t = torch.arange(1, length + 1, dtype=torch.float64)
    at = a[..., None] ** t  # (dim, state, L)
    h = at * h0.double()[..., None] + (dt * Bv * uv) * (1 - at) / (1 - a[..., None])  # (batch, dim, state, L)
    y = (h * Cv.double()[:, None, :, None]).sum(2) + D.double()[None, :, None] * uv
    torch.testing.assert_close(out.double(), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last.double(), h[..., -1], rtol=1e-5, atol=1e-5)


def test_grouped_B_C_closed_form():
    # two groups with different constant B: channels 0-1 read group 0, channels 2-3 read group 1
    batch, dim, state, length = 1, 4, 2, 25
    A = -torch.full((dim, state), 0.5)
    Bg = torch.tensor([1.0, -2.0])
    B = Bg.view(1, 2, 1, 1).expand(batch, 2, state, length).contiguous()
    C = torch.ones(batch, 2, state, length)
    u = torch.ones(batch, dim, length)
    delta = torch.full((batch, dim, length), 0.2)
    out = selective_scan_ref(u, delta, A, B, C)
    a = math.exp(0.2 * -0.5)
    for d in range(dim):
        b = 0.2 * Bg[d // 2].item()
        expected = [state * b * (1 - a**t) / (1 - a) for t in range(1, length + 1)]
        assert out[0, d].tolist() == pytest.approx(expected, rel=1e-5)
