"""genossm inspect: list the contigs of a FASTA (or of a list of FASTAs) with length, N, GC and soft-mask fractions; config: conf/inspect.yaml."""

from __future__ import annotations

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from genossm.data import tokenizer as tk
from genossm.data.token_cache import TokenCache, open_tokens
from genossm.paths import conf_dir
from genossm.tasks.outputs import write_table
from genossm.workflows import user_errors

READ_BLOCK = 1 << 24  # packed tokens per bincount


def contig_stats(cache: TokenCache, contig: str) -> dict:  # or a MultiTokenCache (fasta=[a.fa,b.fa])
    """Counts over the contig's packed tokens (one bincount per 16 Mb block)."""
    packed = cache.packed(contig)
    counts = np.zeros(256, dtype=np.int64)
    for start in range(0, len(packed), READ_BLOCK):
        counts += np.bincount(packed[start : start + READ_BLOCK], minlength=256)
    ids = counts[:128] + counts[128:]
    length = int(len(packed))
    acgt = int(ids[: tk.NUM_BASES].sum())
    return {
        "contig": contig,
        "length": length,
        "n_fraction": int(ids[tk.N]) / max(length, 1),
        "gc_fraction": int(ids[tk.C] + ids[tk.G]) / max(acgt, 1),
        "softmask_fraction": int(counts[128:].sum()) / max(length, 1),
    }


def inspect(cfg: DictConfig) -> list[dict]:
    cache = open_tokens(cfg.fasta, cache_dir=cfg.cache_dir, contigs=cfg.contigs)
    rows = [contig_stats(cache, name) for name in cache.contig_names]
    total = sum(r["length"] for r in rows)
    summary = {
        "contig": f"all {len(rows)}",
        "length": total,
        **{k: sum(r[k] * r["length"] for r in rows) / max(total, 1) for k in ("n_fraction", "softmask_fraction")},
        "gc_fraction": sum(r["gc_fraction"] * r["length"] * (1 - r["n_fraction"]) for r in rows)
        / max(sum(r["length"] * (1 - r["n_fraction"]) for r in rows), 1),
    }
    print(f"{cache.fasta}")
    width = max(len(r["contig"]) for r in rows[: cfg.max_rows] + [summary])
    print(f"{'contig':<{width}}  {'length':>13}  {'N':>7}  {'GC':>7}  {'soft-masked':>11}")
    shown = rows[: cfg.max_rows]
    for r in shown + [summary]:
        print(f"{r['contig']:<{width}}  {r['length']:>13,}  {r['n_fraction']:>7.2%}  {r['gc_fraction']:>7.2%}  {r['softmask_fraction']:>11.2%}")
    if len(rows) > len(shown):
        print(f"... {len(rows) - len(shown)} more contigs (set max_rows or output=contigs.tsv)")
    if cfg.output:
        table = pd.DataFrame(rows, columns=["contig", "length", "n_fraction", "gc_fraction", "softmask_fraction"])
        write_table(table, cfg.output, float_format="%.6f")
    return rows


# the run of a composed config (genossm.compose), for the command and for Python
run = inspect


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="inspect")
def main(cfg: DictConfig):
    return user_errors(run)(cfg)


if __name__ == "__main__":
    main()
