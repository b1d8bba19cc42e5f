"""Make the small genome files in data/ from the full genomes (run from the repository root).

    python data/make_slices.py [--shared ../shared/data]

Every file is cut from a real genome; see data/README.md for what each holds and where it comes from.
"""

from __future__ import annotations

import argparse
import gzip
import re
import shutil
from pathlib import Path

import pysam
from Bio import SeqIO
from Bio.Seq import Seq

HERE = Path(__file__).resolve().parent

# Arabidopsis chloroplast NC_000932.1 (1-based, inclusive): the inverted repeats, checked by sequence below
LSC = (1, 84170)
IRB = (84171, 110434)
SSC = (110435, 128214)
IRA = (128215, 154478)
VAL = (112001, 126000)  # inside the SSC (unique sequence)
TEST = (60001, 74000)  # inside the LSC (unique sequence)

CHR20_SLICE = (19_860_001, 20_060_000)  # GRCh37, 1-based inclusive; holds 5 records of chr20_indels_1000g.vcf.gz
MULTI = [  # (name in the file, source genome, 1-based inclusive)
    ("chr20", "human_chr20_GRCh37.fa.gz", "20", 50_001, 90_000),  # 10 kb of telomeric N, then sequence
    ("ecoli_k12", "ecoli_k12_mg1655.fa.gz", None, 1, 40_000),
    ("saureus_n315", "saureus_n315.fa.gz", None, 1, 30_000),
]
HOMOPOLYMER_MIN = 8


def write_fasta(path: Path, records: list[tuple[str, str]], width: int) -> None:
    with open(path, "w") as out:
        for header, seq in records:
            out.write(f">{header}\n")
            for i in range(0, len(seq), width):
                out.write(seq[i : i + width] + "\n")


def bgzip(plain: Path, target: Path) -> None:
    pysam.tabix_compress(str(plain), str(target), force=True)
    pysam.faidx(str(target))  # writes .fai and .gzi


def first_record(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        return next(SeqIO.parse(handle, "fasta"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared", default=str(HERE.parent.parent / "shared" / "data"))
    args = parser.parse_args()
    genomes = Path(args.shared) / "genomes"

    # demo genome, its annotation, and its split
    chloro_src = genomes / "athaliana_chloroplast_NC_000932.fa"
    shutil.copyfile(chloro_src, HERE / "athaliana_chloroplast.fa")
    pysam.faidx(str(HERE / "athaliana_chloroplast.fa"))
    shutil.copyfile(Path(args.shared) / "annotations" / "athaliana_chloroplast_NC_000932.gb", HERE / "athaliana_chloroplast.gb")
    chloro = first_record(chloro_src)
    seq = str(chloro.seq)
    irb = seq[IRB[0] - 1 : IRB[1]]
    ira = seq[IRA[0] - 1 : IRA[1]]
    assert irb == str(Seq(ira).reverse_complement()), "inverted repeats are not reverse complements"
    assert len(seq) == IRA[1]
    name = chloro.id
    val = [(name, VAL[0] - 1, VAL[1])]
    test = [(name, TEST[0] - 1, TEST[1])]
    train = [(name, 0, TEST[0] - 1), (name, TEST[1], VAL[0] - 1), (name, VAL[1], len(seq))]
    for split, ivs in (("train", train), ("val", val), ("test", test)):
        with open(HERE / f"athaliana_chloroplast.{split}.bed", "w") as out:
            for c, s, e in ivs:
                out.write(f"{c}\t{s}\t{e}\n")

    # soft-masked: the two inverted repeats and homopolymer runs of >= 8 bases in lowercase
    masked = list(seq)
    for lo, hi in (IRB, IRA):
        masked[lo - 1 : hi] = seq[lo - 1 : hi].lower()
    for m in re.finditer(r"A{%d,}|C{%d,}|G{%d,}|T{%d,}" % ((HOMOPOLYMER_MIN,) * 4), seq):
        masked[m.start() : m.end()] = seq[m.start() : m.end()].lower()
    write_fasta(HERE / "athaliana_chloroplast_softmasked.fa", [(f"{name} soft-masked: inverted repeats and homopolymers >= {HOMOPOLYMER_MIN} bp in lowercase", "".join(masked))], 60)
    pysam.faidx(str(HERE / "athaliana_chloroplast_softmasked.fa"))

    # human chr20 slice for variant scoring, bgzip with .fai/.gzi
    with pysam.FastaFile(str(genomes / "human_chr20_GRCh37.fa.gz")) as fa:
        lo, hi = CHR20_SLICE
        chr20 = fa.fetch("20", lo - 1, hi)
        multi = []
        for new, src, contig, a, b in MULTI:
            if contig:
                multi.append((f"{new} slice of human chromosome 20 GRCh37 20:{a}-{b}", fa.fetch(contig, a - 1, b)))
            else:
                rec = first_record(genomes / src)
                multi.append((f"{new} slice {a}-{b} of {rec.id}", str(rec.seq[a - 1 : b])))
    plain = HERE / "human_chr20_slice.fa"
    write_fasta(plain, [(f"20 GRCh37 chromosome 20 slice 20:{lo}-{hi} (1-based); position p here is {lo - 1}+p on chr20", chr20)], 60)
    bgzip(plain, HERE / "human_chr20_slice.fa.gz")
    plain.unlink()

    # one multi-contig file in three forms with the same content
    write_fasta(HERE / "multi_contig.fa", multi, 80)
    pysam.faidx(str(HERE / "multi_contig.fa"))
    with open(HERE / "multi_contig.fa", "rb") as src, gzip.GzipFile(HERE / "multi_contig.fa.gz", "wb", mtime=0) as dst:
        shutil.copyfileobj(src, dst)
    bgzip(HERE / "multi_contig.fa", HERE / "multi_contig.bgzip.fa.gz")


if __name__ == "__main__":
    main()
