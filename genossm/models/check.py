"""``genossm models check PRETRAINED``: compare genossm's import of a Caduceus / PlantCaduceus checkpoint with the
original modeling code on random sequences, where both are installed.

The original code is the checkpoint's own (``transformers`` with ``trust_remote_code=True``, which runs the
Python files of the Hub repository, and ``mamba_ssm`` for its scan, a CUDA build). That is the one place genossm
runs code from a checkpoint, and only when the user asks for this check. The comparison reads the same thing
the scores read: the log-softmax over the A, C, G, T logits, at every position of sequences with N runs and
masked positions, and of their reverse complements.
"""

from __future__ import annotations

import argparse
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from genossm.errors import GenossmError
from genossm.vocab import COMPLEMENT, MASK, N, NUM_BASES

# a faithful fp32 import agrees to about 1e-5; the CUDA kernels sum in another order, so allow 1e-3
TOLERANCE = 1e-3


def check_sequences(lengths=(64, 1000), seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    """Random ACGT sequences (1, L) of each length with an N run, single Ns and masked positions, each followed by
    its reverse complement."""
    rng = np.random.default_rng(seed)
    out = []
    for length in lengths:
        tokens = rng.integers(0, NUM_BASES, length)
        tokens[rng.choice(length, max(1, length // 50), replace=False)] = N
        tokens[length // 2: length // 2 + min(20, length // 10)] = N
        tokens[rng.choice(length, max(1, length // 20), replace=False)] = MASK
        x = torch.from_numpy(tokens).long()[None]
        out.append((f"random_{length}", x))
        out.append((f"random_{length}_rc", torch.from_numpy(COMPLEMENT[tokens[::-1].copy()]).long()[None]))
    return out


def compare(model, original_logits: Callable[[torch.Tensor], torch.Tensor], sequences) -> list[dict]:
    """Per sequence: the largest difference of the four-base log-probabilities between genossm's ``model`` and
    ``original_logits`` (checkpoint token ids (1, L) -> logits (1, L, vocabulary))."""
    if model.token_rows is None:
        raise GenossmError("this model was not imported from a foreign checkpoint: there is no original to compare with")
    base_rows = model.config.token_ids[:NUM_BASES]
    device = next(model.parameters()).device
    rows = []
    with torch.no_grad():
        for name, tokens in sequences:
            tokens = tokens.to(device)
            ours = F.log_softmax(model(tokens).double(), dim=-1)
            logits = original_logits(model.token_rows[tokens])
            theirs = F.log_softmax(logits[..., base_rows].double(), dim=-1)
            rows.append({"sequence": name, "length": int(tokens.shape[1]),
                         "max_abs_diff": float((ours - theirs).abs().max())})
    return rows


def load_original(pretrained: str, device: str):
    """The checkpoint's own model class, through transformers with trust_remote_code (the user asked for it)."""
    try:
        from transformers import AutoModelForMaskedLM
    except ImportError:
        raise GenossmError("the check runs the original code: pip install transformers (and mamba_ssm with CUDA)") from None
    from genossm.models.hub import HF, model_path, parse_hf

    if str(pretrained).startswith(HF):
        repo, revision = parse_hf(str(pretrained))
        where, kwargs = repo, {"revision": revision} if revision else {}
    else:
        where, kwargs = str(model_path(pretrained)), {}
    try:
        original = AutoModelForMaskedLM.from_pretrained(where, trust_remote_code=True, **kwargs)
    except Exception as err:  # noqa: BLE001 - whatever the original code raises, name the checkpoint
        raise GenossmError(f"{pretrained}: the original code did not load ({type(err).__name__}: {err})") from err
    original = original.to(device).float().eval()
    return lambda ids: original(input_ids=ids).logits


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="genossm models check", description=__doc__.split("\n\n")[0])
    parser.add_argument("pretrained", help="hf:ORG/NAME[@REVISION] or a checkpoint folder with its code files")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--lengths", default="64,1000", help="comma-separated sequence lengths (default 64,1000)")
    args = parser.parse_args(argv)
    from genossm.models import from_pretrained

    model = from_pretrained(args.pretrained, map_location=args.device)
    original = load_original(args.pretrained, args.device)
    rows = compare(model, original, check_sequences(tuple(int(x) for x in args.lengths.split(","))))
    print(f"{'sequence':<20} {'length':>7}  max |log p genossm - log p original| (A/C/G/T log-softmax)")
    for row in rows:
        print(f"{row['sequence']:<20} {row['length']:>7}  {row['max_abs_diff']:.2e}")
    worst = max(r["max_abs_diff"] for r in rows)
    verdict = "agree" if worst <= TOLERANCE else "DISAGREE"
    print(f"genossm and the original code {verdict}: worst {worst:.2e} (tolerance {TOLERANCE:g})")
    return 0 if worst <= TOLERANCE else 1
