"""The full genomes beside the repository (../shared/data): read them as Biopython and pysam do.

Skipped where ../shared/data is absent (a user's clone); these are the checks on real, large files."""

import gzip
import time

import numpy as np
import pysam
import pytest
from Bio import SeqIO

from genossm.data import tokenizer as tk
from genossm.data.genome import Genome
from genossm.data.token_cache import TokenCache

pytestmark = pytest.mark.shared_data


def biopython(path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        return {r.id: str(r.seq) for r in SeqIO.parse(handle, "fasta")}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["athaliana_chloroplast_NC_000932.fa", "ecoli_k12_mg1655.fa.gz", "saureus_n315.fa.gz"])
def test_small_genomes_match_biopython(name, shared_data, tmp_path):
    path = shared_data / "genomes" / name
    expected = biopython(path)
    cache = TokenCache.open(path, cache_dir=tmp_path)
    assert cache.lengths == {k: len(v) for k, v in expected.items()}
    for contig, seq in expected.items():
        ids, soft = cache.tokens(contig, 0, len(seq))
        assert np.array_equal(ids, tk.encode(seq))
        assert np.array_equal(soft, np.frombuffer(seq.encode(), dtype=np.uint8) >= ord("a"))


@pytest.mark.slow
def test_human_chr20_bgzip_cache_matches_pysam_and_builds_in_time(shared_data, tmp_path):
    path = shared_data / "genomes" / "human_chr20_GRCh37.fa.gz"
    started = time.perf_counter()
    cache = TokenCache.open(path, cache_dir=tmp_path, contigs="chr20")
    build_s = time.perf_counter() - started
    assert build_s < 60, f"token cache of chr20 took {build_s:.0f} s"
    genome = Genome(path, cache_dir=tmp_path)
    rng = np.random.default_rng(0)
    with pysam.FastaFile(str(path)) as fa:
        assert cache.lengths == {"20": fa.get_reference_length("20")} == genome.lengths
        for start in [0, 59_999, 60_000, *rng.integers(0, 63_000_000, 20), 63_025_520 - 1000]:
            start = int(start)
            seq = fa.fetch("20", start, start + 1000)
            assert genome.fetch("chr20", start, start + 1000) == seq
            assert tk.decode(*cache.tokens("20", start, start + 1000)) == seq
    assert 0.05 < cache.n_fraction("20") < 0.06  # telomeric and centromeric N runs
