"""A tiny model memorises a short real sequence: masked-LM loss falls well below log 4."""

import gzip
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from Bio import SeqIO

from conftest import tiny
from genossm.data.tokenizer import MASK, encode
from genossm.models import BiMambaLM

FASTA = Path(__file__).resolve().parents[2] / "data" / "variants_chr20_slice.fa.gz"


def real_sequence(length: int) -> torch.Tensor:
    """The first N-free stretch of ``length`` bases of a genome slice shipped in data/ (read with Biopython)."""
    with gzip.open(FASTA, "rt") as handle:
        seq = str(next(SeqIO.parse(handle, "fasta")).seq).upper()
    start = next(i for i in range(0, len(seq) - length, 97) if "N" not in seq[i : i + length])
    return torch.from_numpy(encode(seq[start : start + length]).astype("int64"))


def masked_batch(seq, batch, generator, rate=0.15):
    x = seq.expand(batch, -1).clone()
    masked = torch.rand(x.shape, generator=generator) < rate
    x[masked] = MASK
    return x, masked


@pytest.mark.slow
def test_tiny_model_overfits_a_real_sequence():
    seq = real_sequence(96)
    torch.manual_seed(0)
    model = BiMambaLM(tiny(d_model=32, n_layers=2, d_state=8, rc_equivariant=True))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    target = seq.expand(8, -1)
    for step in range(100):
        x, masked = masked_batch(seq, 8, g)
        loss = F.cross_entropy(model(x)[masked], target[masked])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        x, masked = masked_batch(seq, 16, torch.Generator().manual_seed(123))
        final = F.cross_entropy(model(x)[masked], seq.expand(16, -1)[masked]).item()
    print(f"masked-LM loss after training: {final:.3f} nats (log 4 = {math.log(4):.3f})")
    assert final < 0.5 * math.log(4)
