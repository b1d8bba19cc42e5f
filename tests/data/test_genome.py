"""Genome ingest: every FASTA form against Biopython's parse of the same file, aliases, selection, bad input."""

import gzip
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from Bio import SeqIO

from genossm.data import tokenizer as tk
from genossm.data.cache_folder import cache_folder
from genossm.data.genome import Genome, canonical_contig
from genossm.errors import GenossmError

DATA = Path(__file__).resolve().parents[2] / "data"
FORMS = {
    "athaliana_chloroplast.fa": "plain",
    "athaliana_chloroplast_softmasked.fa": "plain",
    "multi_contig.fa": "plain",
    "multi_contig.fa.gz": "gzip",
    "multi_contig.bgzip.fa.gz": "bgzip",
    "human_chr20_slice.fa.gz": "bgzip",
}


def biopython_records(path: Path) -> dict[str, str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        return {rec.id: str(rec.seq) for rec in SeqIO.parse(handle, "fasta")}


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(FORMS))
def test_every_bundled_form_matches_biopython(name, tmp_path):
    path = DATA / name
    expected = biopython_records(path)
    genome = Genome(path, cache_dir=tmp_path)
    assert genome.format == FORMS[name]
    assert genome.contig_names == list(expected)
    assert genome.lengths == {k: len(v) for k, v in expected.items()}
    rng = np.random.default_rng(0)
    for contig, seq in expected.items():
        assert genome.fetch(contig, 0, len(seq)) == seq
        for _ in range(20):
            a, b = sorted(rng.integers(0, len(seq) + 1, size=2))
            assert genome.fetch(contig, a, b) == seq[a:b]
        ids, soft = genome.fetch_tokens(contig, 0, len(seq))
        assert np.array_equal(ids, tk.encode(seq)) and np.array_equal(soft, np.array([c.islower() for c in seq]))


def test_softmasked_slice_keeps_lowercase_where_the_file_has_it(tmp_path):
    genome = Genome(DATA / "athaliana_chloroplast_softmasked.fa", cache_dir=tmp_path)
    plain = Genome(DATA / "athaliana_chloroplast.fa", cache_dir=tmp_path)
    name = genome.contig_names[0]
    masked = genome.fetch(name, 0, genome.lengths[name])
    assert masked.upper() == plain.fetch(name, 0, plain.lengths[name])
    _, soft = genome.fetch_tokens(name, 84170, 110434)  # the inverted repeat IRb is lowercase in that file
    assert soft.all()


def test_iupac_codes_and_crlf_lines_match_biopython(tmp_path):
    path = tmp_path / "iupac.fa"
    path.write_bytes(b">a first\r\nACGTRYKM\r\nswbdhvNn\r\nAC\r\n>b\r\nacgtu\r\n")
    genome = Genome(path, cache_dir=tmp_path)
    expected = biopython_records(path)
    assert {c: genome.fetch(c, 0, genome.lengths[c]) for c in genome.contig_names} == expected
    ids, soft = genome.fetch_tokens("a", 0, 18)
    assert tk.decode(ids) == "ACGTNNNNNNNNNNNNAC"
    assert soft.tolist() == [False] * 8 + [True] * 6 + [False, True, False, False]


def test_aliases_and_contig_selection(tmp_path):
    genome = Genome(DATA / "multi_contig.fa", cache_dir=tmp_path)
    assert genome.resolve("20") == genome.resolve("chr20") == "chr20"
    assert Genome(DATA / "human_chr20_slice.fa.gz", cache_dir=tmp_path).resolve("chr20") == "20"
    assert Genome(DATA / "multi_contig.fa", contigs=["20", "saureus_n315"]).contig_names == ["chr20", "saureus_n315"]
    assert Genome(DATA / "multi_contig.fa", contigs="(ecoli|saureus)_.*").contig_names == ["ecoli_k12", "saureus_n315"]
    assert Genome(DATA / "multi_contig.fa", contigs="20").contig_names == ["chr20"]
    for a, b in [("chrM", "MT"), ("chrMT", "M"), ("chrX", "X"), ("Chr7", "7"), ("chr20", "20")]:
        assert canonical_contig(a) == canonical_contig(b)
    assert canonical_contig("chr2") != canonical_contig("chr20")
    with pytest.raises(GenossmError, match=r"multi_contig\.fa.*no contig named 'chr7'"):
        genome.resolve("chr7")
    with pytest.raises(GenossmError, match="no contig named"):
        Genome(DATA / "multi_contig.fa", contigs=["chrX"])


def test_fetch_outside_a_contig_is_an_error(tmp_path):
    genome = Genome(DATA / "multi_contig.fa", cache_dir=tmp_path)
    assert genome.fetch("ecoli_k12", 39_990, 40_000) and genome.fetch("ecoli_k12", 5, 5) == ""
    for start, end in [(39_990, 40_001), (-1, 5), (10, 5)]:
        with pytest.raises(GenossmError, match="outside the contig"):
            genome.fetch("ecoli_k12", start, end)


def test_plain_gzip_is_decompressed_once_and_refreshed_when_it_changes(tmp_path, caplog):
    src = tmp_path / "g.fa.gz"
    with gzip.open(src, "wt") as h:
        h.write(">x\nACGTACGT\nAC\n")
    cache = tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger="genossm.data.genome"):
        assert Genome(src, cache_dir=cache).fetch("x", 0, 10) == "ACGTACGTAC"
        assert Genome(src, cache_dir=cache).fetch("x", 0, 10) == "ACGTACGTAC"
    assert sum("decompressing" in r.message for r in caplog.records) == 1
    assert len(list(cache_folder(src, cache).glob("*.fa"))) == 1
    with gzip.open(src, "wt") as h:
        h.write(">x\nTTTTGGGG\nCCA\n")
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 10**9))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="genossm.data.genome"):
        genome = Genome(src, cache_dir=cache)
    assert genome.fetch("x", 0, 11) == "TTTTGGGGCCA"
    assert any("decompressing" in r.message for r in caplog.records)


def test_read_only_folder_gets_its_index_in_the_cache(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    shutil.copy(DATA / "multi_contig.fa", folder / "g.fa")
    folder.chmod(0o555)
    try:
        genome = Genome(folder / "g.fa", cache_dir=tmp_path / "cache")
        assert genome.fetch("chr20", 10_000, 10_010) == biopython_records(DATA / "multi_contig.fa")["chr20"][10_000:10_010]
        assert not (folder / "g.fa.fai").exists()
        assert list((tmp_path / "cache").rglob("g.fa.fai"))
    finally:
        folder.chmod(0o755)


def test_bundled_data_of_an_installed_package_is_cached_in_the_user_folder(tmp_path, monkeypatch):
    from genossm.data import cache_folder as cache_folder_module

    installed = tmp_path / "site-packages" / "genossm" / "_data"
    installed.mkdir(parents=True)
    shutil.copy(DATA / "multi_contig.fa", installed / "g.fa")
    beside = tmp_path / "beside"
    beside.mkdir()
    shutil.copy(DATA / "multi_contig.fa", beside / "g.fa")
    monkeypatch.setattr(cache_folder_module, "INSTALLED_DATA", installed)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    assert cache_folder(installed / "g.fa").parent == tmp_path / "user-cache" / "genossm"
    assert cache_folder(beside / "g.fa").parent == beside / ".genossm-cache"
    assert not (installed / ".genossm-cache").exists()


# -- bad input: each one a GenossmError naming the file and the record or line ---------------------


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(GenossmError, match=r"nope\.fa: FASTA file not found"):
        Genome(tmp_path / "nope.fa")
    with pytest.raises(GenossmError, match=r"empty\.fa: the file is empty"):
        Genome(write(tmp_path / "empty.fa", ""))
    with pytest.raises(GenossmError, match=r"blank\.fa: the file is empty"):
        Genome(write(tmp_path / "blank.fa", "\n\n  \n"))
    empty_gz = tmp_path / "empty.fa.gz"
    with gzip.open(empty_gz, "wb"):
        pass
    with pytest.raises(GenossmError, match=r"empty"):
        Genome(empty_gz, cache_dir=tmp_path)


def test_not_fasta_names_the_line(tmp_path):
    with pytest.raises(GenossmError, match=r"reads\.fq: not a FASTA file: line 1 .*'@read1'"):
        Genome(write(tmp_path / "reads.fq", "@read1\nACGT\n+\nIIII\n"))
    with pytest.raises(GenossmError, match=r"calls\.vcf: not a FASTA file: line 3"):
        Genome(write(tmp_path / "calls.vcf", "\n\n20\t100\t.\tA\tG\n"))
    binary = tmp_path / "blob.fa"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(GenossmError, match=r"blob\.fa: not a FASTA file: line 1"):
        Genome(binary)


def test_duplicate_contig_names_give_both_lines(tmp_path):
    path = write(tmp_path / "dup.fa", ">a\nACGT\n>b desc\nGGGG\n>a again\nTTTT\n")
    with pytest.raises(GenossmError, match=r"dup\.fa: duplicate contig name 'a' \(headers on lines 1 and 5\)"):
        Genome(path)


def test_inconsistent_line_lengths_name_the_line(tmp_path):
    path = write(tmp_path / "ragged.fa", ">a\nACGTACGT\nACG\nACGTACGT\n>b\nAC\n")
    with pytest.raises(GenossmError, match=r"ragged\.fa: line 3 \(record 'a'\) is 3 bases long"):
        Genome(path)


@pytest.mark.parametrize("name", ["multi_contig.fa.gz", "multi_contig.bgzip.fa.gz"])
def test_truncated_gzip_and_bgzip(name, tmp_path):
    data = (DATA / name).read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[: len(data) // 2])
    kind = "bgzip" if "bgzip" in name else "gzip"
    with pytest.raises(GenossmError, match=rf"{cut.name}: truncated {kind} file"):
        Genome(cut, cache_dir=tmp_path / "cache")


def test_fai_with_wrong_lengths_names_the_record(tmp_path):
    shutil.copy(DATA / "multi_contig.fa", tmp_path / "g.fa")
    lines = (DATA / "multi_contig.fa.fai").read_text().splitlines()
    fields = lines[1].split("\t")
    fields[1] = str(int(fields[1]) - 100)  # ecoli_k12 shorter than it is
    lines[1] = "\t".join(fields)
    (tmp_path / "g.fa.fai").write_text("\n".join(lines) + "\n")
    with pytest.raises(GenossmError, match=r"g\.fa\.fai: the index disagrees with .*g\.fa at record 'ecoli_k12' \(line 2 of the \.fai\)"):
        Genome(tmp_path / "g.fa")


def test_stale_fai_after_the_fasta_changed(tmp_path):
    path = tmp_path / "g.fa"
    path.write_text(">a\nACGTACGT\nACGT\n>b\nGGGG\n")
    Genome(path)  # writes g.fa.fai
    path.write_text(">a\nACGTACGT\nACGTACGTAC\n>b\nGGGG\n")
    os.utime(path.with_name("g.fa.fai"), ns=(0, path.stat().st_mtime_ns + 10**9))  # an index that looks newer
    with pytest.raises(GenossmError, match=r"g\.fa\.fai: the index disagrees .* record 'a' .*delete it"):
        Genome(path)


def test_fai_of_another_file(tmp_path):
    shutil.copy(DATA / "athaliana_chloroplast_softmasked.fa", tmp_path / "g.fa")
    shutil.copy(DATA / "athaliana_chloroplast.fa.fai", tmp_path / "g.fa.fai")  # same contig, other header length
    with pytest.raises(GenossmError, match=r"index disagrees .* record 'NC_000932.1'"):
        Genome(tmp_path / "g.fa")


# -- layouts pyfaidx cannot index: the real cause, with its line, and a fix that works ---------------------

BROKEN_LAYOUTS = {
    # name: (file text, what the message must say)
    "blank_line_inside_record": (">a\nACGTACGT\nACGTACGT\n\nACGTAC\n>b\nACGT\n", r"line 4 is blank inside record 'a'"),
    "blank_line_after_short_line": (">a\nACGTACGT\nACG\nACGTACGT\n\n>b\nACGT\n", r"line 3 \(record 'a'\) is 3 bases long"),
    "cr_only_line_ends": (">a\rACGTACGT\rACGTACGT\rACG\r>b\rACGT\r", r"CR-only line endings"),
    "space_inside_sequence": (">a\nACGT ACGT\nACGTACGT\nACG\n>b\nACGT\n", r"line 2 \(record 'a'\) has a space at column 5"),
    "trailing_spaces": (">a\nACGTACGT  \nACGTACGT  \nACG\n>b\nACGT\n", r"line 2 \(record 'a'\) has trailing whitespace"),
    "binary_after_header": (">a\n\x00\x01\xff\xfeACGT\nACGTACGT\nACG\n>b\nACGT\n", r"line 2 \(record 'a'\): column 1 holds a non-text byte 0x00"),
    "ragged_lines": (">a\nACGTACGT\nACGTAC\nACGTACGT\n>b\nACGT\n", r"line 3 \(record 'a'\) is 6 bases long but the record's lines are 8"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_LAYOUTS))
def test_broken_layout_names_the_cause_and_line(case, tmp_path):
    text, message = BROKEN_LAYOUTS[case]
    path = tmp_path / "g.fa"
    path.write_bytes(text.encode("latin-1"))
    for attempt in range(2):  # the second time too: no half-built index left behind to blame as stale
        with pytest.raises(GenossmError, match=message) as err:
            Genome(path)
        assert "stale" not in str(err.value) and "report this issue" not in str(err.value)
        assert str(path) in str(err.value)
        assert not path.with_name("g.fa.fai").exists()


@pytest.mark.parametrize("case", ["blank_line_inside_record", "space_inside_sequence", "trailing_spaces", "ragged_lines",
                                  "blank_line_after_short_line"])
def test_the_advised_rewrite_command_fixes_the_file(case, tmp_path):
    text, _ = BROKEN_LAYOUTS[case]
    path = tmp_path / "g.fa"
    path.write_text(text)
    with pytest.raises(GenossmError) as err:
        Genome(path)
    command = str(err.value).split("with: ", 1)[1]
    assert command.startswith("python -c ")
    subprocess.run(command.replace("python", sys.executable, 1), shell=True, check=True, cwd=tmp_path)
    fixed = Genome(tmp_path / "g.fixed.fa")
    expected = {name: seq.replace(" ", "") for name, seq in biopython_records(path).items()}
    assert {n: fixed.fetch(n, 0, fixed.lengths[n]) for n in fixed.contig_names} == expected


def test_cr_only_fix_command_works(tmp_path):
    path = tmp_path / "g.fa"
    path.write_bytes(BROKEN_LAYOUTS["cr_only_line_ends"][0].encode())
    with pytest.raises(GenossmError) as err:
        Genome(path)
    subprocess.run(str(err.value).split("with: ", 1)[1], shell=True, check=True, cwd=tmp_path)
    fixed = Genome(tmp_path / "g.fixed.fa")
    assert fixed.fetch("a", 0, 19) == "ACGTACGTACGTACGTACG" and fixed.fetch("b", 0, 4) == "ACGT"


def test_blank_lines_in_a_gzip_fasta_name_the_gz_file(tmp_path):
    path = tmp_path / "g.fa.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(BROKEN_LAYOUTS["blank_line_inside_record"][0])
    with pytest.raises(GenossmError, match=r"g\.fa\.gz: line 4 is blank inside record 'a'") as err:
        Genome(path, cache_dir=tmp_path / "cache")
    command = str(err.value).split("with: ", 1)[1]
    subprocess.run(command.replace("python", sys.executable, 1), shell=True, check=True, cwd=tmp_path)
    assert Genome(tmp_path / "g.fixed.fa").fetch("a", 0, 22) == "ACGTACGTACGTACGTACGTAC"


def test_blank_lines_through_the_command(tmp_path):
    path = tmp_path / "g.fa"
    path.write_text(BROKEN_LAYOUTS["blank_line_inside_record"][0])
    done = subprocess.run([sys.executable, "-m", "genossm.cli", "inspect", f"fasta={path}"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2
    assert "line 4 is blank inside record 'a'" in done.stderr
    assert "Traceback" not in done.stderr


def test_non_base_characters_are_counted_and_warned_once(tmp_path, caplog):
    path = write(tmp_path / "g.fa", ">a\nAC1T*C.T\nACGTACGT\n>b\nAC-T\n")
    genome = Genome(path)
    with caplog.at_level(logging.WARNING, logger="genossm.data.genome"):
        assert genome.fetch("a", 0, 16) == "AC1T*C.TACGTACGT"
        genome.fetch("b", 0, 4)
        ids, _ = genome.fetch_tokens("a", 0, 8)
    warnings = [r for r in caplog.records if "non-base" in r.getMessage()]
    assert len(warnings) == 1
    assert "'1', at a:3" in warnings[0].getMessage() and str(path) in warnings[0].getMessage()
    assert genome.non_base_count == 3 + 1 + 3
    assert (ids == tk.encode("ACNTNCNT")).all()


@pytest.mark.parametrize("name", ["multi_contig.fa", "multi_contig.fa.gz", "multi_contig.bgzip.fa.gz"])
def test_a_named_cache_folder_keeps_the_fasta_folder_untouched(name, tmp_path):
    genomes = tmp_path / "genomes"
    genomes.mkdir()
    shutil.copy(DATA / name, genomes / name)
    genome = Genome(genomes / name, cache_dir=tmp_path / "cache")
    genome.fetch(genome.contig_names[0], 0, 10)
    assert sorted(p.name for p in genomes.iterdir()) == [name]
    assert list((tmp_path / "cache").rglob("*.fai"))
