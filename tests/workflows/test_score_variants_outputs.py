"""What genossm score-variants writes, through the command line: long alleles, record-level reasons, region
errors, the VCF's conventions (header lines, index, INFO passed through), table nulls, progress and summary."""

from __future__ import annotations

import gzip

import pandas as pd
import pysam
import pytest

from helpers import run_cli

SLICE = "variants_chr20_slice.fa.gz"
HEADER = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"


def ref(bundled_data, pos: int, n: int = 1) -> str:
    with pysam.FastaFile(str(bundled_data / SLICE)) as fa:
        return fa.fetch("20", pos - 1, pos - 1 + n).upper()


def score(tiny_model, bundled_data, tmp_path, monkeypatch, variants, output, *extra):
    run_cli(["score-variants", f"pretrained={tiny_model}", f"fasta={bundled_data / SLICE}", f"variants={variants}",
             f"output={output}", "progress=false", *extra], monkeypatch, tmp_path)


def test_alleles_longer_than_the_window_get_a_reason(tiny_model, bundled_data, tmp_path, monkeypatch, capsys):
    """A 301-bp deletion (and a 200-bp insertion) at window_len=128 used to get a score from a negative REF
    offset; it gets allele_exceeds_window and the summary names the window that fits, which then scores it."""
    deletion = ref(bundled_data, 421900, 301)
    base = ref(bundled_data, 421950)
    vcf = tmp_path / "long.vcf"
    vcf.write_text(HEADER + f"20\t421900\tdel301\t{deletion}\t{deletion[0]}\t.\t.\t.\n"
                   f"20\t421950\tins200\t{base}\t{base + 'ACGT' * 50}\t.\t.\t.\n"
                   f"20\t422000\tsnv\t{ref(bundled_data, 422000)}\tA\t.\t.\t.\n")
    score(tiny_model, bundled_data, tmp_path, monkeypatch, vcf, tmp_path / "w128.tsv", "window_len=128")
    table = pd.read_csv(tmp_path / "w128.tsv", sep="\t")
    assert list(table["reason"].fillna("")) == ["allele_exceeds_window", "allele_exceeds_window", ""]
    assert table["llr"][:2].isna().all() and table["llr"][2:].notna().all()
    out = capsys.readouterr().out
    assert "not scored, allele_exceeds_window: 2 (window_len=317 or more would score them)" in out
    score(tiny_model, bundled_data, tmp_path, monkeypatch, vcf, tmp_path / "w320.tsv", "window_len=320")
    table = pd.read_csv(tmp_path / "w320.tsv", sep="\t")
    assert table["reason"].isna().all() and table["llr"].notna().all()


def bgzip_indexed(path):
    """``path`` bgzipped and tabix-indexed beside itself; returns the .vcf.gz."""
    pysam.tabix_index(str(path), preset="vcf", keep_original=True, force=True)
    return path.with_name(path.name + ".gz")


def test_record_without_alt_gets_a_record_level_reason(tiny_model, bundled_data, tmp_path, monkeypatch):
    """ALT '.' has no Number=A slot for GENOSSM_SKIP: the record-level GENOSSM_RECORD_SKIP carries it."""
    vcf = tmp_path / "noalt.vcf"
    vcf.write_text(HEADER + f"20\t422010\tnoalt\t{ref(bundled_data, 422010)}\t.\t.\t.\t.\n"
                   f"20\t422020\tsnv\t{ref(bundled_data, 422020)}\tA\t.\t.\t.\n")
    out = tmp_path / "noalt.out.vcf"
    score(tiny_model, bundled_data, tmp_path, monkeypatch, vcf, out)
    with pysam.VariantFile(str(out)) as vf:
        meta = vf.header.info["GENOSSM_RECORD_SKIP"]
        assert (meta.number, meta.type) == (1, "String") and "missing_alt" in meta.description
        first, second = list(vf)
    assert first.info["GENOSSM_RECORD_SKIP"] == "missing_alt" and "GENOSSM_LLR" not in first.info
    assert "GENOSSM_RECORD_SKIP" not in second.info and second.info["GENOSSM_LLR"][0] is not None


def test_region_contig_in_neither_file_is_an_error(tiny_model, bundled_data, tmp_path, monkeypatch, capsys):
    vcf = tmp_path / "calls.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n##contig=<ID=20>\n" + HEADER.split("\n", 1)[1]
                   + f"20\t422020\tsnv\t{ref(bundled_data, 422020)}\tA\t.\t.\t.\n")
    gz = bgzip_indexed(vcf)
    with pytest.raises(SystemExit) as exc:
        score(tiny_model, bundled_data, tmp_path, monkeypatch, gz, tmp_path / "out.tsv", "region=chr7:1-1000")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "contig 'chr7' is neither in" in err and str(gz) in err and SLICE in err
    assert not (tmp_path / "out.tsv").exists()

    # a contig the FASTA knows but the VCF does not: an empty result, and the summary says why
    fasta = tmp_path / "two.fa"
    fasta.write_text(">20\n" + ref(bundled_data, 421001, 2000) + "\n>21\n" + "ACGT" * 100 + "\n")
    vcf.write_text("##fileformat=VCFv4.2\n##contig=<ID=20>\n" + HEADER.split("\n", 1)[1] + "20\t1020\tsnv\t"
                   + ref(bundled_data, 422020) + "\tA\t.\t.\t.\n")
    gz = bgzip_indexed(vcf)
    run_cli(["score-variants", f"pretrained={tiny_model}", f"fasta={fasta}", f"variants={gz}", "region=21:1-100",
             f"output={tmp_path / 'empty.tsv'}", "progress=false"], monkeypatch, tmp_path)
    out = capsys.readouterr().out
    assert "0 records, 0 alleles" in out and f"no records: {gz} has none on 21 (contig 21 of {fasta})" in out
    assert len(pd.read_csv(tmp_path / "empty.tsv", sep="\t")) == 0


def conventions_vcf(bundled_data, path):
    """A hand-made VCF: no ##contig line, AF declared Float (htslib would re-write 0.0 as 0), a symbolic <DEL>
    (htslib would add INFO/END), an undeclared INFO key, records in input order."""
    path.write_text(
        "##fileformat=VCFv4.2\n"
        '##INFO=<ID=AF,Number=A,Type=Float,Description="allele frequency">\n'
        '##INFO=<ID=SVLEN,Number=A,Type=Integer,Description="SV length">\n'
        + HEADER.split("\n", 1)[1]
        + f"20\t421900\tsv\t{ref(bundled_data, 421900)}\t<DEL>\t.\t.\tSVLEN=-300;AF=0.50\n"
        f"20\t422000\tm\t{ref(bundled_data, 422000)}\tA,T\t12.50\tPASS\tAF=0.5,0.0;XX=1.10;FLAG\n"
        f"20\t422010\tnoinfo\t{ref(bundled_data, 422010)}\tG\t.\t.\t.\n"
    )
    return path


def test_scored_vcf_follows_conventions(tiny_model, bundled_data, tmp_path, monkeypatch, capfd):
    vcf = conventions_vcf(bundled_data, tmp_path / "hand.vcf")
    out = tmp_path / "scored.vcf.gz"
    stale = tmp_path / "scored.vcf.gz.tbi"
    stale.write_bytes(b"an index of an earlier file")
    score(tiny_model, bundled_data, tmp_path, monkeypatch, vcf, out, "window_len=64", "strands=both")
    captured = capfd.readouterr()
    assert "[W::" not in captured.err  # htslib's warnings (printed once per pass before) are replaced by one line
    assert captured.out.count("does not declare contig 20") == 1
    with gzip.open(out, "rt") as fh:
        text = fh.read().splitlines()
    header = [line for line in text if line.startswith("##")]
    assert "##source=genossm 0.1.0" in header
    (command,) = [line for line in header if line.startswith("##genossm_command=")]
    for part in (f"pretrained={tiny_model}", "model_config=sha256:", "window_len=64", "strands=both", "indel_flank=8"):
        assert part in command
    assert "##contig=<ID=20>" in header
    # every original field passes through byte for byte, genossm's appended
    original = [line for line in vcf.read_text().splitlines() if not line.startswith("#")]
    records = [line for line in text if not line.startswith("#")]
    assert len(records) == len(original)
    for got, want in zip(records, original):
        cols = got.split("\t")
        info = [kv for kv in cols[7].split(";") if not kv.startswith("GENOSSM_")]
        assert "\t".join(cols[:7] + [";".join(info) or "."]) == want
    assert "END=" not in records[0]
    # the index is the new file's, no older than it, and htslib reads the file without a warning
    assert stale.read_bytes() != b"an index of an earlier file"
    assert stale.stat().st_mtime_ns >= out.stat().st_mtime_ns
    with pysam.VariantFile(str(out)) as vf:
        assert [r.id for r in vf.fetch("20", 421990, 422010)] == ["sv", "m", "noinfo"]  # the <DEL> spans 300 bp
    assert "[W::" not in capfd.readouterr().err


def test_bcf_output_declares_end(tiny_model, bundled_data, tmp_path, monkeypatch, capfd):
    vcf = conventions_vcf(bundled_data, tmp_path / "hand.vcf")
    out = tmp_path / "scored.bcf"
    score(tiny_model, bundled_data, tmp_path, monkeypatch, vcf, out, "window_len=64")
    capfd.readouterr()
    with pysam.VariantFile(str(out)) as vf:
        assert "END" in vf.header.info and [r.id for r in vf] == ["sv", "m", "noinfo"]
        assert "##source=genossm" in str(vf.header)
    assert "[W::" not in capfd.readouterr().err


def test_unsorted_vcf_gz_gets_no_index(tiny_model, bundled_data, tmp_path, monkeypatch, capsys):
    vcf = tmp_path / "unsorted.vcf"
    vcf.write_text(HEADER + f"20\t422020\tb\t{ref(bundled_data, 422020)}\tA\t.\t.\t.\n"
                   f"20\t422010\ta\t{ref(bundled_data, 422010)}\tA\t.\t.\t.\n")
    out = tmp_path / "unsorted.out.vcf.gz"
    score(tiny_model, bundled_data, tmp_path, monkeypatch, vcf, out)
    assert "no .tbi index written" in capsys.readouterr().out
    assert not (tmp_path / "unsorted.out.vcf.gz.tbi").exists()
    with pysam.VariantFile(str(out)) as vf:
        assert [r.id for r in vf] == ["b", "a"]


@pytest.mark.parametrize("name", ["table.tsv", "table.parquet"])
def test_missing_id_and_reason_are_null(tiny_model, bundled_data, tmp_path, monkeypatch, name):
    vcf = tmp_path / "ids.vcf"
    vcf.write_text(HEADER + f"20\t422010\t.\t{ref(bundled_data, 422010)}\tA\t.\t.\t.\n"
                   f"21\t10\trs1\tA\tC\t.\t.\t.\n")
    out = tmp_path / name
    score(tiny_model, bundled_data, tmp_path, monkeypatch, vcf, out)
    table = pd.read_parquet(out) if name.endswith(".parquet") else pd.read_csv(out, sep="\t")
    assert table["id"].isna().tolist() == [True, False] and table["id"][1] == "rs1"
    assert table["reason"].isna().tolist() == [True, False] and table["reason"][1] == "contig_absent"


def test_progress_has_a_total_and_rates_keep_their_digits(tiny_model, bundled_data, tmp_path, monkeypatch, capsys):
    from genossm.tasks.variant_outputs import rate

    assert [rate(2, 5), rate(1, 480), rate(123, 10), rate(12_345, 10), rate(0, 3)] == ["0.4", "0.0021", "12.3", "1,234", "0"]
    vcf = conventions_vcf(bundled_data, tmp_path / "hand.vcf")
    run_cli(["score-variants", f"pretrained={tiny_model}", f"fasta={bundled_data / SLICE}", f"variants={vcf}",
             f"output={tmp_path / 'p.tsv'}", "window_len=64"], monkeypatch, tmp_path)
    captured = capsys.readouterr()
    assert "4/4" in captured.err  # 4 alleles: the bar has its total (and so an ETA)
    assert " alleles/s)" in captured.out and "(0 alleles/s)" not in captured.out


def test_short_region_heatmap_reads_in_genome_coordinates(tiny_model, bundled_data, tmp_path, monkeypatch):
    """A 40-bp saturation heatmap: full title with the contig, positions as genome coordinates (no offset
    notation, no overlapping labels), the reference sequence along the top, the colour bar's units and sign."""
    import re

    from genossm.tasks.plots import heatmap_figure

    svg = tmp_path / "sat.svg"
    run_cli(["score-variants", f"pretrained={tiny_model}", f"fasta={bundled_data / SLICE}", "scan=saturation",
             "region=20:421801-421840", "window_len=32", "emb_dist=false", f"output={tmp_path / 'sat.tsv'}",
             f"heatmap={svg}", "progress=false"], monkeypatch, tmp_path)
    texts = [t.strip() for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg.read_text())]
    assert "genossm saturation mutagenesis, 20:421,801-421,840 (40 bp)" in texts
    assert "position on 20 (1-based)" in texts
    assert any("alt − ref, nats" in t for t in texts) and any("negative = alt less likely" in t for t in texts)
    assert any(re.fullmatch(r"421,8\d\d", t) for t in texts)

    table = pd.read_csv(tmp_path / "sat.tsv", sep="\t")
    rows = list(zip(table["pos"], table["ref"], table["alt"], table["llr"]))
    fig = heatmap_figure(rows, "20")
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.xaxis.get_offset_text().get_text() == ""
    labels = [t for t in ax.get_xticklabels() if t.get_text() and t.get_visible()]
    assert labels and all(re.fullmatch(r"421,8\d\d", t.get_text()) for t in labels)
    boxes = sorted((t.get_window_extent() for t in labels), key=lambda b: b.x0)
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:]))  # no overlap
    fig_box = fig.bbox
    title = ax.title.get_window_extent()
    assert title.x0 >= fig_box.x0 and title.x1 <= fig_box.x1  # not clipped
    (top,) = ax.child_axes  # the secondary x axis along the top
    assert "".join(t.get_text() for t in top.get_xticklabels()) == ref(bundled_data, 421801, 40)
