"""genossm inspect: list the contigs of a FASTA (or of a list of FASTAs) with length, N, GC and soft-mask fractions; config: conf/inspect.yaml."""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from genossm.options import RunOptions, size
from genossm.paths import conf_dir
from genossm.workflows import user_errors

if TYPE_CHECKING:
    from genossm.data.token_cache import TokenCache

# numpy, torch and the data modules are imported inside the functions that use them: the run says what it reads
# (its first log line) before it loads them

log = logging.getLogger("genossm.inspect")

READ_BLOCK = 1 << 24  # packed tokens per bincount


@dataclasses.dataclass
class InspectOptions(RunOptions):
    """The options of ``genossm inspect`` (``conf/inspect.yaml``), checked when made."""

    fasta: str | list[str] | None = None
    """The genome (plain, gzip, bgzip), or a list of files whose contigs together form it."""
    contigs: str | list[str] | None = None
    """Only these contigs (names or aliases, or a regular expression); null: all."""
    cache_dir: str | None = None
    """Where the token cache goes (null: ``.genossm-cache/`` beside the FASTA, or the user cache when that
    folder is read-only)."""
    max_rows: int = size(50, minimum=0)
    """Contigs printed (all of them go to ``output``)."""
    output: str | None = None
    """Also write the table to this TSV."""

    def describe(self) -> str:
        """One line saying what the run reads (the run's first log line)."""
        return f"inspect: the contigs of {self.fasta}" + (f" ({self.contigs})" if self.contigs else "")


def contig_stats(cache: TokenCache, contig: str) -> dict:  # or a MultiTokenCache (fasta=[a.fa,b.fa])
    """Counts over the contig's packed tokens (one bincount per 16 Mb block)."""
    import numpy as np

    from genossm.data import tokenizer as tk

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
    """The table of ``fasta``'s contigs, printed (and written to ``output``)."""
    opts = InspectOptions.from_config(cfg)
    log.info("%s", opts.describe())
    import pandas as pd

    from genossm.data.token_cache import open_tokens
    from genossm.tasks.outputs import write_table

    cache = open_tokens(opts.fasta, cache_dir=opts.cache_dir, contigs=opts.contigs)
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
    width = max(len(r["contig"]) for r in rows[: opts.max_rows] + [summary])
    print(f"{'contig':<{width}}  {'length':>13}  {'N':>7}  {'GC':>7}  {'soft-masked':>11}")
    shown = rows[: opts.max_rows]
    for r in shown + [summary]:
        print(f"{r['contig']:<{width}}  {r['length']:>13,}  {r['n_fraction']:>7.2%}  {r['gc_fraction']:>7.2%}  {r['softmask_fraction']:>11.2%}")
    if len(rows) > len(shown):
        print(f"... {len(rows) - len(shown)} more contigs (set max_rows or output=contigs.tsv)")
    if opts.output:
        table = pd.DataFrame(rows, columns=["contig", "length", "n_fraction", "gc_fraction", "softmask_fraction"])
        write_table(table, opts.output, float_format="%.6f")
    return rows


# the run of a composed config (genossm.compose), for the command and for Python
run = inspect


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="inspect")
def main(cfg: DictConfig):
    return user_errors(run)(cfg)


if __name__ == "__main__":
    main()
