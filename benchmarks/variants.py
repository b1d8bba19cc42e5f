"""Variant scoring throughput: SNVs per second and the share of time spent outside the model's forward pass.

    python benchmarks/variants.py                      # tiny model on CPU at 2 kb and 131 kb windows
    python benchmarks/variants.py --n 256 --windows 2048 131072 --emb-dist
    python benchmarks/variants.py --model small --device cuda   # on a GPU machine

Random-weight models (speed does not depend on training). SNVs are drawn at real (non-N) bases of the full
chr20 genome in ../shared/data when present, else of the shipped slice data/variants_chr20_slice.fa.gz.
"Outside forward" = wall time of the whole run (reading, checks, window fetching, batching, Lightning,
writing the VCF and table) minus the time inside the model's forward/embed calls.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from genossm.config import model_config
from genossm.data.genome import Genome
from genossm.models import BiMambaConfig, BiMambaLM, save_pretrained
from genossm.paths import data_dir
from genossm.tasks import variants as tv

REPO = Path(__file__).resolve().parent.parent
FULL = REPO.parent / "shared" / "data" / "genomes" / "human_chr20_GRCh37.fa.gz"


def make_snvs(genome: Genome, n: int, path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    length = genome.all_lengths["20"]
    lines = []
    while len(lines) < n:
        pos = int(rng.integers(200_000, length - 200_000))
        ref = genome.fetch("20", pos, pos + 1).upper()
        if ref not in "ACGT":
            continue
        lines.append((pos + 1, ref, "ACGT".replace(ref, "")[len(lines) % 3]))
    lines.sort()
    with open(path, "w") as fh:
        fh.write("##fileformat=VCFv4.2\n##contig=<ID=20,length=%d>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n" % length)
        for pos, ref, alt in lines:
            fh.write(f"20\t{pos}\t.\t{ref}\t{alt}\t.\t.\t.\n")


def snvs_in_slice(genome: Genome, n: int, path: Path) -> None:
    """The slice is N outside +-1.5 kb of each indel: draw positions from its real stretches."""
    seq_cache = {}
    rng = np.random.default_rng(0)
    with open(data_dir() / "variants_chr20_indels_1000g.vcf.gz", "rb") as fh:
        import gzip

        import pysam

        centres = [r.pos for r in pysam.VariantFile(gzip.open(fh))]
    rows = []
    while len(rows) < n:
        c = centres[int(rng.integers(len(centres)))]
        pos = c + int(rng.integers(-1000, 1000))
        ref = seq_cache.setdefault(pos, genome.fetch("20", pos - 1, pos).upper())
        if ref in "ACGT":
            rows.append((pos, ref, "ACGT".replace(ref, "")[len(rows) % 3]))
    rows.sort()
    with open(path, "w") as fh:
        fh.write("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        for pos, ref, alt in rows:
            fh.write(f"20\t{pos}\t.\t{ref}\t{alt}\t.\t.\t.\n")


class Timed(torch.nn.Module):
    """Wraps a model and adds up the time of its forward and embed calls (synchronising CUDA)."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.config = model.config
        self.embed_dim = model.embed_dim
        self.seconds = 0.0

    def _timed(self, fn, *args, **kwargs):
        sync = torch.cuda.synchronize if args[0].is_cuda else (lambda: None)
        sync()
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        sync()
        self.seconds += time.perf_counter() - t
        return out

    def forward(self, tokens, chunk_len=None):
        return self._timed(self.inner, tokens, chunk_len=chunk_len)

    def embed(self, tokens, **kwargs):
        return self._timed(self.inner.embed, tokens, **kwargs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--windows", type=int, nargs="+", default=[2048, 131072])
    ap.add_argument("--n", type=int, nargs="+", default=[64, 4], help="SNVs per window length (last one repeats)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--emb-dist", action="store_true", help="also compute the embedding distance (2 more passes)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = model_config(args.model)
    torch.manual_seed(0)
    model = BiMambaLM(BiMambaConfig(**cfg)).eval()
    fasta = FULL if FULL.exists() else data_dir() / "variants_chr20_slice.fa.gz"
    genome = Genome(fasta)
    print(f"model {args.model} ({model.num_parameters():,} parameters), device {args.device}, genome {fasta.name}, "
          f"torch threads {torch.get_num_threads()}, scores: llr{' + emb_dist' if args.emb_dist else ''}")
    print(f"{'window':>8} {'SNVs':>6} {'seconds':>8} {'SNVs/s':>8} {'forward s':>9} {'outside forward':>15}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_pretrained(model, tmp / "model")
        for k, window in enumerate(args.windows):
            n = args.n[min(k, len(args.n) - 1)]
            vcf = tmp / f"snvs{window}.vcf"
            (make_snvs if fasta == FULL else snvs_in_slice)(genome, n, vcf)
            timed = Timed(model.to(args.device))
            trainer = {"accelerator": "gpu" if args.device.startswith("cuda") else "cpu", "devices": 1}
            if args.device.startswith("cuda"):
                trainer["precision"] = "bf16-mixed"
            if args.device.startswith("cuda"):  # warm-up: the first call pays for kernel compilation
                tv.score_variants(None, fasta, tmp / "warm.tsv", vcf, window_len=window, alleles_per_batch=args.batch_size,
                                  emb_dist=args.emb_dist, trainer=trainer, progress=False, model=timed)
            timed.seconds = 0.0
            t = time.perf_counter()
            tv.score_variants(None, fasta, tmp / "out.vcf", vcf, window_len=window, alleles_per_batch=args.batch_size,
                              emb_dist=args.emb_dist, trainer=trainer, progress=False, model=timed)
            total = time.perf_counter() - t
            print(f"{window:>8} {n:>6} {total:>8.2f} {n / total:>8.2f} {timed.seconds:>9.2f} "
                  f"{100 * (total - timed.seconds) / total:>14.1f}%")


if __name__ == "__main__":
    main()
