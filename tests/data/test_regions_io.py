"""Region input: exact coordinates and strands (against pyfaidx and Biopython), labels, errors, leak-free splits."""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pyfaidx
import pytest
from Bio.Seq import reverse_complement as bio_rc

from genossm.data import tokenizer as tok
from genossm.data.genome import Genome
from genossm.data.intervals import assign_splits, crossing_pairs, overlap_groups
from genossm.data.regions import auto_region_len, center_fit, read_regions, region_sequences, region_tokens
from genossm.errors import GenossmError
from genossm.tasks.region_labels import encode_labels

from helpers import run_cli

@pytest.fixture
def fasta(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "genome.fa"
    with open(path, "w") as fh:
        for name, n in (("1", 1500), ("MT", 700)):
            seq = "".join(rng.choice(list("ACGTacgtN"), size=n, p=[0.22] * 4 + [0.02] * 4 + [0.04]))
            fh.write(f">{name} test contig\n")
            fh.writelines(seq[i : i + 60] + "\n" for i in range(0, n, 60))
    return path


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_bed_coordinates_and_strand_match_pyfaidx_and_biopython(tmp_path, fasta):
    rng = np.random.default_rng(2)
    rows, expected = [], []
    ref = pyfaidx.Fasta(str(fasta), sequence_always_upper=True)
    for i in range(60):
        chrom, length = ("1", 1500) if i % 3 else ("MT", 700)
        start = int(rng.integers(0, length - 1))
        end = int(rng.integers(start + 1, min(length, start + 300) + 1))
        strand = "-" if rng.random() < 0.5 else "+"
        alias = {"1": "chr1", "MT": "chrM"}[chrom] if i % 5 == 0 else chrom  # aliases resolve at the edge
        rows.append(f"{alias}\t{start}\t{end}\tr{i}\t0\t{strand}")
        seq = ref[chrom][start:end].seq
        expected.append(bio_rc(seq) if strand == "-" else seq)
    bed = write(tmp_path / "r.bed", ["track name=test", "# comment", *rows])
    regions = read_regions(bed)
    assert regions.has_coords and len(regions) == 60
    seqs = region_sequences(regions, Genome(fasta))
    for got, want in zip(seqs, expected):
        assert tok.decode(got) == want
    # fixed length: centred crop / pad of the same oriented sequence
    tokens, valid = region_tokens(regions, Genome(fasta), region_len=101)
    assert tokens.shape == valid.shape == (60, 101)
    for i, want in enumerate(expected):
        n = len(want)
        got = tok.decode(tokens[i][valid[i]])
        if n >= 101:
            off = (n - 101) // 2
            assert got == want[off : off + 101]
        else:
            assert got == want
            left = (101 - n) // 2
            assert valid[i].nonzero()[0].item() == left
            assert (tokens[i][~valid[i]] == tok.PAD).all()


def test_region_len_auto_is_the_longest_region_rounded_up_to_8_within_the_window(tmp_path):
    assert [auto_region_len([n]) for n in (1, 8, 81, 200, 201)] == [8, 8, 88, 200, 208]
    assert auto_region_len([81, 30, 64]) == 88
    assert auto_region_len([81], max_len=64) == 64 and auto_region_len([81], max_len=84) == 84
    assert auto_region_len([81], max_len=2048) == 88
    fa = write(tmp_path / "g.fa", [">c", "ACGT" * 100])
    bed = write(tmp_path / "r.bed", ["c\t0\t81\t1", "c\t100\t130\t0"])
    regions = read_regions(bed, need_labels=True)
    tokens, valid = region_tokens(regions, Genome(fa), "auto")
    assert tokens.shape == (2, 88) and valid.sum(1).tolist() == [81, 30]
    assert region_tokens(regions, Genome(fa), "auto", max_len=40)[0].shape == (2, 40)
    assert region_tokens(regions, Genome(fa), None)[0].shape == (2, 81)  # null: the longest, as it is
    assert region_tokens(regions, Genome(fa), 200, max_len=40)[0].shape == (2, 200)  # a number wins


def test_center_fit_crops_and_pads_symmetrically():
    ids = np.arange(10, dtype=np.uint8) % 4
    out, valid = center_fit(ids, 4)
    assert out.tolist() == ids[3:7].tolist() and valid.all()
    out, valid = center_fit(ids, 15)
    assert out[:2].tolist() == [tok.PAD] * 2 and out[2:12].tolist() == ids.tolist() and out[12:].tolist() == [tok.PAD] * 3
    assert valid.sum() == 10 and valid[2:12].all()


def test_headerless_bed_label_is_fourth_column(tmp_path):
    bed = write(tmp_path / "l.bed", ["1\t0\t10\t1", "1\t5\t20\t0", "MT\t0\t30\t1"])
    labels = encode_labels(read_regions(bed, need_labels=True))
    assert labels.task == "binary" and labels.y.tolist() == [1.0, 0.0, 1.0]


def test_tsv_header_strand_split_and_label_kinds(tmp_path):
    tsv = write(
        tmp_path / "r.tsv",
        ["#chrom\tstart\tend\tstrand\tactivity\tsplit", "1\t0\t10\t-\t2.5\ttrain", "1\t20\t30\t.\t-1\tvalidation", "MT\t0\t10\t+\t0\ttest"],
    )
    regions = read_regions(tsv, label_column="activity", need_labels=True)
    assert regions.table["strand"].tolist() == ["-", "+", "+"]
    assert regions.table["split"].tolist() == ["train", "val", "test"]
    labels = encode_labels(regions)
    assert labels.task == "regression" and labels.y.tolist() == [2.5, -1.0, 0.0]
    assert assign_splits(regions).tolist() == ["train", "val", "test"]
    multi = write(tmp_path / "m.tsv", ["chrom\tstart\tend\tlabel"] + ["1\t0\t10\tenhancer", "1\t0\t10\tpromoter", "1\t0\t10\tother"] * 2)
    labels = encode_labels(read_regions(multi, need_labels=True))
    assert labels.task == "multiclass" and labels.classes == ["enhancer", "other", "promoter"]
    assert labels.y.tolist() == [0, 2, 1] * 2


def test_fasta_and_sequence_tsv_inputs(tmp_path):
    fa = write(tmp_path / "s.fa", [">a label=1 split=train", "ACGTN", ">b label=0 split=test", "ggcc"])
    regions = read_regions(fa, need_labels=True)
    assert not regions.has_coords and regions.table["name"].tolist() == ["a", "b"]
    assert [tok.decode(s) for s in region_sequences(regions)] == ["ACGTN", "GGCC"]
    assert encode_labels(regions).y.tolist() == [1.0, 0.0]
    tsv = write(tmp_path / "s.tsv", ["name\tsequence\tlabel", "x\tACGT\t1.5", "y\tTTTTT\t2"])
    tokens, valid = region_tokens(read_regions(tsv, need_labels=True))
    assert tokens.shape == (2, 5) and valid.sum(1).tolist() == [4, 5]


@pytest.mark.parametrize(
    "lines, kwargs, message",
    [
        (["1\t0\t10\t1", "1\t50\t40\t0"], {}, r"l\.bed line 3: end 40 < start 50"),
        (["1\t0\t10\t1", "1\tx\t40\t0"], {}, r"l\.bed line 3: start/end 'x'/'40' are not integers"),
        (["1\t0\t10\t1", "1\t-5\t40\t0"], {}, r"l\.bed line 3: start -5 is negative"),
        (["1\t0\t10", "1\t5\t40"], {"need_labels": True}, r"l\.bed line 2: label column 'label' missing"),
        (["1\t0\t10\t1\t0\t+", "1\t5\t40\t1\t0\tx"], {}, r"l\.bed line 3: strand 'x'"),
        (["1\t0\t10\t1", "1\t5\t40\t."], {"need_labels": True}, r"l\.bed line 3: label is missing"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, lines, kwargs, message):
    bed = write(tmp_path / "l.bed", ["# header-less test file", *lines])
    with pytest.raises(GenossmError, match=message):
        read_regions(bed, **kwargs)


def test_genome_and_label_errors_name_the_line(tmp_path, fasta):
    genome = Genome(fasta)
    unknown = write(tmp_path / "u.bed", ["1\t0\t10\t1", "chr7\t0\t10\t1"])
    with pytest.raises(GenossmError, match=r"u\.bed line 2: contig 'chr7' is not in .*genome\.fa"):
        region_sequences(read_regions(unknown), genome)
    beyond = write(tmp_path / "b.bed", ["1\t0\t10\t1", "MT\t600\t701\t1"])
    with pytest.raises(GenossmError, match=r"b\.bed line 2: region end 701 is beyond the end of MT \(700 bp"):
        region_sequences(read_regions(beyond), genome)
    text = write(tmp_path / "t.tsv", ["chrom\tstart\tend\tlabel", "1\t0\t10\t0.5", "1\t0\t10\thigh"])
    with pytest.raises(GenossmError, match=r"t\.tsv line 3: label 'high' is not a number"):
        encode_labels(read_regions(text, need_labels=True), label_type="regression")
    no_label = write(tmp_path / "n.tsv", ["chrom\tstart\tend\tscore", "1\t0\t10\t0.5"])
    with pytest.raises(GenossmError, match=r"n\.tsv line 2: label column 'label' missing \(columns: chrom, start, end, score\)"):
        read_regions(no_label, need_labels=True)


def brute_force_groups(intervals):
    parent = list(range(len(intervals)))

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for i, j in itertools.combinations(range(len(intervals)), 2):
        (ci, si, ei), (cj, sj, ej) = intervals[i], intervals[j]
        if ci == cj and si < ej and sj < ei:
            parent[find(i)] = find(j)
    return [find(i) for i in range(len(intervals))]


def test_overlap_groups_equal_brute_force_connected_components():
    rng = np.random.default_rng(3)
    intervals = []
    for _ in range(250):
        c = str(rng.choice(["a", "b"]))
        s = int(rng.integers(0, 5000))
        intervals.append((c, s, s + int(rng.integers(1, 120))))
    groups = overlap_groups(*zip(*intervals))
    ref = brute_force_groups(intervals)
    for i, j in itertools.combinations(range(len(intervals)), 2):
        assert (groups[i] == groups[j]) == (ref[i] == ref[j])


def test_random_and_contig_splits_do_not_leak(tmp_path):
    rng = np.random.default_rng(4)
    lines = ["chrom\tstart\tend\tlabel"]
    intervals = []
    for i in range(300):
        c = f"c{i % 5}"
        s = int(rng.integers(0, 20000))
        e = s + int(rng.integers(50, 400))
        lines.append(f"{c}\t{s}\t{e}\t{i % 2}")
        intervals.append((c, s, e))
    regions = read_regions(write(tmp_path / "r.tsv", lines), need_labels=True)
    for seed in range(3):
        splits = assign_splits(regions, mode="random", fractions=(0.6, 0.2, 0.2), seed=seed)
        assert set(splits) == {"train", "val", "test"}
        for i, j in itertools.combinations(range(len(intervals)), 2):
            (ci, si, ei), (cj, sj, ej) = intervals[i], intervals[j]
            if ci == cj and si < ej and sj < ei:
                assert splits[i] == splits[j], (intervals[i], intervals[j])
        assert crossing_pairs(regions, splits) == []
        counts = {s: (splits == s).mean() for s in ("train", "val", "test")}
        assert 0.45 < counts["train"] < 0.75
    by_contig = assign_splits(regions, mode="contig", seed=0)
    for c in {c for c, _, _ in intervals}:
        assert len(set(by_contig[regions.table["chrom"] == c])) == 1
    chosen = assign_splits(regions, mode="contig", val_contigs=["c1"], test_contigs=["c2", "c3"])
    assert set(chosen[regions.table["chrom"] == "c2"]) == {"test"} and set(chosen[regions.table["chrom"] == "c1"]) == {"val"}
    with pytest.raises(GenossmError, match="split contig 'c9' has no regions"):
        assign_splits(regions, mode="contig", test_contigs=["c9"])
    with pytest.raises(GenossmError, match="no 'split' column"):
        assign_splits(regions, mode="column")


def test_random_split_keeps_identical_sequences_together(tmp_path):
    fa = write(tmp_path / "s.fa", [line for i in range(40) for line in (f">s{i} label={i % 2}", "ACGTAC" if i % 4 == 0 else "GGT" * (i + 1))])
    regions = read_regions(fa, need_labels=True)
    splits = assign_splits(regions, mode="random", seed=1)
    dup = np.array([i % 4 == 0 for i in range(40)])
    assert len(set(splits[dup])) == 1


def test_shipped_task_has_no_leak_across_splits(bundled_data):
    regions = read_regions(bundled_data / "chloroplast_promoters.tsv", need_labels=True)
    labels = encode_labels(regions)
    assert labels.task == "binary" and 100 < int(labels.y.sum()) < len(regions) / 2
    splits = assign_splits(regions)  # the file's split column
    assert crossing_pairs(regions, splits) == []
    assert (regions.lengths() == 200).all()
    # windows in one inverted repeat and their mirror image in the other are never in different splits
    sys.path.insert(0, str(bundled_data))
    try:
        from make_promoter_task import mirror
    finally:
        sys.path.remove(str(bundled_data))
    ir = (84170, 110434, 128214, 154478)  # NC_000932.1 IRb and IRa (checked against the sequence below)
    t = regions.table
    for i in range(len(t)):
        m = mirror(int(t["start"].iat[i]), int(t["end"].iat[i]), ir)
        if m is None:
            continue
        linked = (t["start"] < m[1]) & (t["end"] > m[0])
        assert set(splits[linked.to_numpy()]) <= {splits[i]}


@pytest.mark.slow
def test_shipped_task_is_reproducible_and_repeats_found(bundled_data, tmp_path):
    sys.path.insert(0, str(bundled_data))
    try:
        import make_promoter_task as script
    finally:
        sys.path.remove(str(bundled_data))
    from Bio import SeqIO

    gb = bundled_data / "athaliana_chloroplast.gb"
    seq = str(SeqIO.read(str(gb), "genbank").seq)
    a0, a1, b0, b1 = script.inverted_repeat(seq)
    assert (a0, a1, b0, b1) == (84170, 110434, 128214, 154478)
    assert seq[a0:a1] == bio_rc(seq[b0:b1])
    out = tmp_path / "task.tsv"
    sys.argv = ["make_promoter_task.py", "--genbank", str(gb), "--out", str(out)]
    script.main()
    assert out.read_text() == (bundled_data / "chloroplast_promoters.tsv").read_text()


# -- label sets no classifier can learn from, and messages that name the real cause -------------------------

def _bed(tmp_path, labels, name="l.bed", extra=""):
    return write(tmp_path / name, [f"1\t{10 * i}\t{10 * i + 8}\t{lab}{extra}" for i, lab in enumerate(labels)])


def test_bed6_name_column_is_not_taken_as_labels(tmp_path):
    bed = _bed(tmp_path, [f"peak{i}" for i in range(60)], extra="\t0\t+")
    with pytest.raises(GenossmError, match=r"l\.bed line 1: label column 'label' missing .*4th column holds 60 "
                                           r"distinct values for 60 regions, which look like region names.*label_column=NAME"):
        read_regions(bed, need_labels=True)
    assert read_regions(bed, label_column=None).table["name"].iat[3] == "peak3"  # still the region names
    labelled = _bed(tmp_path, ["enhancer", "promoter"] * 30, name="k.bed", extra="\t0\t+")
    regions = read_regions(labelled, need_labels=True)
    assert "4th column" in regions.label_note and encode_labels(regions).label_type == "binary"


def test_single_class_through_the_command(tmp_path, monkeypatch, capsys):
    bed = _bed(tmp_path, ["1"] * 10)
    with pytest.raises(SystemExit) as exc:
        run_cli(["finetune", f"regions={bed}", f"fasta={bundled_genome()}", f"output={tmp_path / 'run'}"],
                monkeypatch, tmp_path)
    assert exc.value.code == 2
    assert "every region has the label '1'" in capsys.readouterr().err


def bundled_genome():
    from genossm.paths import data_dir

    return data_dir() / "athaliana_chloroplast.fa"


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("e.bed", "", r"e\.bed: the regions file is empty \(0 bytes\)"),
        ("s.bed", "1 0 10 1\n1 20 30 0\n", r"s\.bed line 1: the fields are separated by spaces, not tabs"),
        ("h.tsv", "1\t0\t10\tx\t0\t7\textra\n", r"h\.tsv line 1: strand '7' \(column 6\) is not \+, - or \.; the file has "
                                              r"no header line, so its 7 columns are read as BED"),
    ],
)
def test_messages_name_the_real_cause(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(GenossmError, match=message):
        read_regions(path, need_labels=True)


def test_missing_label_column_advises_a_key_that_exists(tmp_path):
    from omegaconf import OmegaConf

    from genossm.paths import conf_dir

    path = write(tmp_path / "n.tsv", ["chrom\tstart\tend\tscore", "1\t0\t10\t0.5"])
    with pytest.raises(GenossmError) as err:
        read_regions(path, need_labels=True)
    key = str(err.value).rsplit("set ", 1)[1].split("=")[0]
    assert key == "label_column" and key in OmegaConf.load(conf_dir() / "finetune.yaml")
