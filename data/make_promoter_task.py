"""Build the labelled region task shipped with genossm: chloroplast gene-upstream windows vs other windows.

Task: is a 200 bp window the region just upstream of an annotated gene start (label 1), or a random
200 bp window elsewhere in the genome (label 0)?

* Source: the NCBI RefSeq GenBank record NC_000932.1 (Arabidopsis thaliana chloroplast, 154,478 bp,
  circular), the same sequence as the bundled FASTA.
* Positives: for every ``gene`` feature, the 200 bp immediately 5' of its start, on the gene's strand
  (``+``: [start-200, start); ``-``: [end, end+200), read reverse complemented). The 5' start of the
  trans-spliced rps12 is its first exon. Windows that would cross the linear coordinate origin are
  dropped; identical windows (the two rps12 records share a 5' exon) are kept once.
* Negatives: twice as many 200 bp windows at seeded random positions on a random strand, overlapping
  no positive window, no other negative, and no mirror image of a positive in the other inverted repeat.
* Inverted repeats: the chloroplast carries two ~26 kb inverted repeats (IRb, IRa) whose genes are
  copies of each other. They are found from the sequence itself (the longest stretch where the genome
  matches its own reverse complement). Each window is linked to the windows overlapping it and to those
  overlapping its mirror image in the other repeat; each linked group goes to one split, so no test
  window has an identical copy (or an overlapping one) in training.
* Splits (default ``--split heldout``): the same genome intervals the bundled pretraining demo holds out
  (``athaliana_chloroplast.val.bed``, ``athaliana_chloroplast.test.bed``): a window inside the val/test
  interval is val/test, a window touching neither is train, and the few windows straddling a boundary
  are dropped. A model pretrained on the demo's train split has then never seen a val/test base.
  Both held-out intervals lie in the single-copy regions, so no mirror image crosses the split; the
  script checks that no linked group crosses it. ``--split random`` instead shuffles the linked groups
  with the seed and fills 70 % train, 15 % val, 15 % test (by window count).

Output: ``chloroplast_promoters.tsv`` (tab separated, header ``chrom start end strand label split name``,
0-based half-open coordinates as in BED). Deterministic: the same inputs and seed give the same file.

    python data/make_promoter_task.py                      # rewrites data/chloroplast_promoters.tsv
    python data/make_promoter_task.py --genbank X.gb --out task.tsv --window 200 --seed 0 --split random
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GENBANK = HERE / "athaliana_chloroplast.gb"  # NC_000932.1
HELDOUT = {"val": HERE / "athaliana_chloroplast.val.bed", "test": HERE / "athaliana_chloroplast.test.bed"}


def read_bed_intervals(path: Path) -> list[tuple[int, int]]:
    out = []
    for line in Path(path).read_text().splitlines():
        if line.strip() and not line.startswith(("#", "track", "browser")):
            fields = line.split("\t")
            out.append((int(fields[1]), int(fields[2])))
    return out


def inverted_repeat(seq: str, k: int = 32) -> tuple[int, int, int, int]:
    """(a_start, a_end, b_start, b_end) of the longest inverted repeat: seq[a] == reverse complement of seq[b].

    Every k-mer of the reverse complement is indexed; the longest run of consecutive k-mer matches on one
    diagonal is the repeat. The chloroplast's IRs are ~26 kb, far longer than any other repeat.
    """
    from Bio.Seq import reverse_complement

    rc = reverse_complement(seq)
    n = len(seq)
    index: dict[str, list[int]] = {}
    for j in range(n - k + 1):
        index.setdefault(rc[j : j + k], []).append(j)
    best = (0, 0, 0)  # (length, i0, j0)
    active: dict[int, tuple[int, int]] = {}  # diagonal i - j -> (i0, j0) of the run of matches reaching i - 1
    for i in range(n - k + 1):
        active = {i - j: active.get(i - j, (i, j)) for j in index.get(seq[i : i + k], ())}
        for i0, j0 in active.values():
            if i - i0 + k > best[0]:
                best = (i - i0 + k, i0, j0)
    length, i0, j0 = best
    # seq[i0 + t] pairs with seq[n - 1 - j0 - t]
    a = (i0, i0 + length)
    b = (n - j0 - length, n - j0)
    return (*a, *b) if a[0] < b[0] else (*b, *a)


def mirror(start: int, end: int, ir: tuple[int, int, int, int]) -> tuple[int, int] | None:
    """The part of [start, end) inside one inverted repeat, mapped onto the other copy (None outside both)."""
    a0, a1, b0, b1 = ir
    for (s0, s1), (t0, t1) in (((a0, a1), (b0, b1)), ((b0, b1), (a0, a1))):
        lo, hi = max(start, s0), min(end, s1)
        if lo < hi:  # position p in one copy pairs with s0 + t1 - 1 - p in the other
            return (s0 + t1 - hi, s0 + t1 - lo)
    return None


def five_prime(feature) -> tuple[int, int]:
    """(position, strand) of a gene's 5' end; for multi-part (trans-spliced) genes, the first part."""
    part = feature.location.parts[0]
    strand = part.strand if part.strand is not None else feature.location.strand
    return (int(part.end), -1) if strand == -1 else (int(part.start), 1)


def overlaps(start: int, end: int, intervals: list[tuple[int, int]]) -> bool:
    return any(start < e and s < end for s, e in intervals)


def build(genbank: Path, window: int, seed: int, split: str = "heldout", negatives_per_positive: int = 2,
          fractions=(0.7, 0.15, 0.15)):
    from Bio import SeqIO

    record = SeqIO.read(str(genbank), "genbank")
    seq = str(record.seq).upper()
    chrom, n = record.id, len(seq)
    ir = inverted_repeat(seq)

    positives: dict[tuple[int, int, str], str] = {}
    for feature in record.features:
        if feature.type != "gene":
            continue
        pos, strand = five_prime(feature)
        start, end = (pos - window, pos) if strand == 1 else (pos, pos + window)
        if start < 0 or end > n:
            continue
        name = feature.qualifiers.get("gene", feature.qualifiers.get("locus_tag", ["gene"]))[0]
        positives.setdefault((start, end, "+" if strand == 1 else "-"), f"{name}_upstream")

    blocked = [(s, e) for s, e, _ in positives]
    blocked += [m for s, e, _ in positives if (m := mirror(s, e, ir)) is not None]
    rng = np.random.default_rng(seed)
    negatives: list[tuple[int, int, str]] = []
    wanted = negatives_per_positive * len(positives)
    while len(negatives) < wanted:
        start = int(rng.integers(0, n - window + 1))
        end = start + window
        strand = "+" if rng.random() < 0.5 else "-"
        m = mirror(start, end, ir)
        if overlaps(start, end, blocked) or (m is not None and overlaps(*m, blocked)):
            continue
        negatives.append((start, end, strand))
        blocked.append((start, end))
        if m is not None:
            blocked.append(m)

    rows = [(s, e, st, 1, name) for (s, e, st), name in positives.items()]
    rows += [(s, e, st, 0, f"random_{s}") for s, e, st in negatives]
    rows.sort(key=lambda r: (r[0], r[1], r[2]))

    # link overlapping windows and mirror images (union-find over a sweep of all intervals)
    parent = list(range(len(rows)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    intervals = [(s, e, i) for i, (s, e, *_rest) in enumerate(rows)]
    intervals += [(*m, i) for i, (s, e, *_rest) in enumerate(rows) if (m := mirror(s, e, ir)) is not None]
    intervals.sort()
    reach, owner = -1, None
    for s, e, i in intervals:
        if owner is not None and s < reach:
            parent[find(i)] = find(owner)
        if e > reach:
            reach, owner = e, i
    roots = [find(i) for i in range(len(rows))]
    group_ids = {r: k for k, r in enumerate(dict.fromkeys(roots))}
    groups = np.array([group_ids[r] for r in roots])

    from genossm.data.intervals import SPLITS, fill_splits

    if split == "random":
        assigned = fill_splits(np.bincount(groups), fractions, np.random.default_rng(seed + 1))
        splits = [SPLITS[k] for k in assigned[groups]]
    else:
        heldout = {name: read_bed_intervals(path) for name, path in HELDOUT.items()}
        splits = []
        for s, e, *_rest in rows:
            inside = [name for name, ivs in heldout.items() if any(a <= s and e <= b for a, b in ivs)]
            touching = any(overlaps(s, e, ivs) for ivs in heldout.values())
            splits.append(inside[0] if inside else ("drop" if touching else "train"))
        for g in np.unique(groups):
            members = {splits[i] for i in np.flatnonzero(groups == g)} - {"drop"}
            if len(members) > 1:
                raise SystemExit(f"linked windows {[rows[i][:2] for i in np.flatnonzero(groups == g)]} cross splits {members}")
        keep = [i for i, sp in enumerate(splits) if sp != "drop"]
        rows, splits = [rows[i] for i in keep], [splits[i] for i in keep]
    return chrom, rows, splits, ir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--genbank", type=Path, default=GENBANK)
    parser.add_argument("--out", type=Path, default=HERE / "chloroplast_promoters.tsv")
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=("heldout", "random"), default="heldout")
    args = parser.parse_args()
    chrom, rows, splits, ir = build(args.genbank, args.window, args.seed, args.split)
    with open(args.out, "w") as out:
        out.write("chrom\tstart\tend\tstrand\tlabel\tsplit\tname\n")
        for (s, e, strand, label, name), split in zip(rows, splits):
            out.write(f"{chrom}\t{s}\t{e}\t{strand}\t{label}\t{split}\t{name}\n")
    counts = {sp: (sum(1 for x, r in zip(splits, rows) if x == sp and r[3] == 1), splits.count(sp)) for sp in ("train", "val", "test")}
    print(f"inverted repeats: [{ir[0]}, {ir[1]}) and [{ir[2]}, {ir[3]}) ({ir[1] - ir[0]} bp)")
    print(f"wrote {len(rows)} windows to {args.out.name}: " + ", ".join(f"{k} {p}/{t} positive" for k, (p, t) in counts.items()))


if __name__ == "__main__":
    main()
