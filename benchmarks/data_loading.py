"""Data-loading benchmark: token-cache build time and steady-state tokens/s served by GenomeDataModule.

    python benchmarks/data_loading.py [--fasta ../shared/data/genomes/human_chr20_GRCh37.fa.gz]

Builds the token cache of the genome from scratch in a temporary folder (timed), then for windows of
1 kb, 131 kb and 1 Mb and 1 and 2 DataLoader workers, draws training batches (random windows, RC
augmentation on, N-skipping on) and reports tokens per second after a warm-up. Tokens/s per worker is the
total divided by the number of workers. Timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from torch.utils.data import get_worker_info

from genossm.data import windows
from genossm.data.datamodule import GenomeDataModule
from genossm.data.token_cache import TokenCache

DEFAULT_FASTA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "genomes" / "human_chr20_GRCh37.fa.gz"


def steady_tokens_per_s(dm: GenomeDataModule, seconds: float, warmup_batches: int) -> float:
    loader = dm.train_dataloader()
    n_tokens, started = 0, None
    for i, batch in enumerate(loader):
        if i == warmup_batches:
            started = time.perf_counter()
        elif i > warmup_batches:
            n_tokens += batch["tokens"].numel()
            if time.perf_counter() - started > seconds:
                break
    return n_tokens / (time.perf_counter() - started)


def worker_alone_tokens_per_s(dataset, seconds: float) -> float:
    """What one worker process produces: the packed batches, before any transfer or unpacking."""
    windows.get_worker_info = lambda: True  # make batches exactly as inside a worker (packed)
    try:
        dataset.batch(0, 0)
        n_tokens, started, index = 0, time.perf_counter(), 1
        while time.perf_counter() - started < seconds:
            n_tokens += dataset.batch(0, index)["packed"].numel()
            index += 1
        return n_tokens / (time.perf_counter() - started)
    finally:
        windows.get_worker_info = get_worker_info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fasta", default=str(DEFAULT_FASTA))
    parser.add_argument("--seconds", type=float, default=4.0, help="measuring time per setting")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as cache_dir:
        started = time.perf_counter()
        cache = TokenCache.open(args.fasta, cache_dir=cache_dir)
        build_s = time.perf_counter() - started
        n_bases = sum(cache.lengths.values())
        print(f"genome: {args.fasta} ({len(cache.lengths)} contigs, {n_bases:,} bases)")
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
              f"load average {os.getloadavg()[0]:.1f} at start")
        print(f"token cache build: {build_s:.1f} s ({n_bases / build_s / 1e6:.0f} M bases/s)\n")
        print("worker alone: batches made in one process as a worker makes them (packed bytes, no transfer)")
        print("loader: batches received from the DataLoader with that many workers (transfer and unpacking included)\n")
        print("| window | batch | worker alone tokens/s | workers | loader tokens/s (total) | per worker |")
        print("|---:|---:|---:|---:|---:|---:|")
        for window_len, batch_size in ((1024, 256), (131_072, 8), (1_048_576, 1)):
            dm = GenomeDataModule(args.fasta, window_len=window_len, batch_size=batch_size, samples_per_epoch=10**9,
                                  cache_dir=cache_dir, rc_augment=True, max_n_fraction=0.5)
            alone = worker_alone_tokens_per_s(dm.train_dataset(), args.seconds)
            for workers in args.workers:
                dm = GenomeDataModule(args.fasta, window_len=window_len, batch_size=batch_size, num_workers=workers,
                                      samples_per_epoch=10**9, cache_dir=cache_dir, rc_augment=True, max_n_fraction=0.5)
                rate = steady_tokens_per_s(dm, args.seconds, warmup_batches=4 * workers)
                print(f"| {window_len:,} | {batch_size} | {alone / 1e6:,.0f} M | {workers} | {rate / 1e6:,.0f} M | "
                      f"{rate / workers / 1e6:,.0f} M |", flush=True)


if __name__ == "__main__":
    main()
