"""On a CUDA GPU: the model on the Triton scan matches the CPU model, forward, gradients and chunked inference."""

import pytest
import torch

from genossm.data.tokenizer import reverse_complement
from genossm.models import BiMambaLM

from conftest import tiny


@pytest.fixture(autouse=True)
def exact_float32():
    """cuDNN convolutions may use TF32 by default (about 1e-3 relative error): compare in true float32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.gpu
@pytest.mark.parametrize("overrides", [dict(rc_equivariant=True), dict(tie_directions=False,
                         bidirectional_strategy="proj"), dict(bidirectional=False)])
def test_cuda_model_matches_cpu(overrides):
    torch.manual_seed(0)
    cpu = BiMambaLM(tiny(d_model=32, scan_backend="reference", **overrides))
    gpu = BiMambaLM(tiny(d_model=32, scan_backend="auto", **overrides)).cuda()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randint(0, 5, (2, 300))
    out_cpu, out_gpu = cpu(x), gpu(x.cuda())
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, atol=2e-4, rtol=2e-4)
    out_cpu.square().mean().backward()
    out_gpu.square().mean().backward()
    for (name, p), q in zip(cpu.named_parameters(), gpu.parameters()):
        torch.testing.assert_close(q.grad.cpu(), p.grad, atol=1e-4, rtol=1e-3, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(gpu(x.cuda(), chunk_len=64), out_gpu, atol=1e-4, rtol=1e-4)
        if gpu.config.rc_equivariant:
            xg = x.cuda()
            torch.testing.assert_close(gpu(reverse_complement(xg)), out_gpu.flip(1).flip(-1), atol=1e-5, rtol=1e-5)
