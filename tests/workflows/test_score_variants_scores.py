"""genossm score-variants' scores against hand computations from the model's logits, on the shipped chr20
slice: SNV log-likelihood ratios per strand, indel pseudo-log-likelihoods, causal models, contig edges, planted
problems, saturation mutagenesis, streaming."""

import gzip
import math

import numpy as np
import pandas as pd
import pysam
import pytest
import torch

from genossm.cli import load_workflow
from genossm.data import tokenizer
from genossm.data.genome import Genome
from genossm.data.variant_windows import place_window
from genossm.errors import GenossmError
from genossm.models import BiMambaLM

from helpers import DATA

tv = load_workflow("score-variants")
score_variants = tv.score_variants

SLICE = "variants_chr20_slice.fa.gz"
INDELS = "variants_chr20_indels_1000g.vcf.gz"
HEADER = "##fileformat=VCFv4.2\n##contig=<ID=20,length=63025520>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
W = 32  # window length used in these tests, the one the models were trained with (small: the CPU scan is the cost)


@pytest.fixture(scope="module")
def genome():
    return Genome(DATA / SLICE)


def score(models, name, variants, out, fasta, **kw):
    """The score-variants workflow from Python with model ``name`` of ``models``."""
    kw.setdefault("progress", False)
    kw.setdefault("indel_flank", 2)
    return score_variants(models[name], fasta, out, variants, **kw)


def logp(model, tokens):
    with torch.no_grad():
        return torch.log_softmax(model(torch.as_tensor(np.ascontiguousarray(tokens), dtype=torch.long)[None]).double(), -1)[0]


def hand_snv_llr(model, genome, pos1, ref, alt, window_len=W):
    """log P(alt) - log P(ref) at the masked position, each strand computed by hand from the logits."""
    start, end = place_window(pos1 - 1, window_len, genome.all_lengths["20"])
    win = tokenizer.encode(genome.fetch("20", start, end))
    p = pos1 - 1 - start
    win[p] = tokenizer.MASK
    r, a = tokenizer.encode(ref)[0], tokenizer.encode(alt)[0]
    fwd = logp(model, win)[p]
    rc = logp(model, tokenizer.reverse_complement(win))[len(win) - 1 - p]
    return float(fwd[a] - fwd[r]), float(rc[3 - a] - rc[3 - r])


def pick_snv(genome, pos1):
    ref = genome.fetch("20", pos1 - 1, pos1).upper()
    return ref, "ACGT".replace(ref, "")[1]


def write(path, text):
    path.write_text(text)
    return path


def test_snv_llr_equals_hand_computation_and_strand_average(scoring_models, genome, tmp_path, bundled_data):
    from genossm.models import from_pretrained

    model = from_pretrained(scoring_models["plain"])
    pos = 421_900
    ref, alt = pick_snv(genome, pos)
    vcf = write(tmp_path / "one.vcf", HEADER + f"20\t{pos}\tv\t{ref}\t{alt}\t.\t.\t.\n")
    fwd, rc = hand_snv_llr(model, genome, pos, ref, alt)
    assert abs(fwd - rc) > 1e-6  # a plain model does read the two strands differently
    score(scoring_models, "plain", vcf, tmp_path / "f.tsv", bundled_data / SLICE, window_len=W, strands="forward")
    score(scoring_models, "plain", vcf, tmp_path / "b.tsv", bundled_data / SLICE, window_len=W, strands="both")
    f = pd.read_csv(tmp_path / "f.tsv", sep="\t")
    b = pd.read_csv(tmp_path / "b.tsv", sep="\t")
    assert f["llr"][0] == pytest.approx(fwd, abs=1e-5)
    assert b["llr"][0] == pytest.approx((fwd + rc) / 2, abs=1e-5)
    assert f["kind"][0] == "snv" and pd.isna(f["reason"][0])


def test_rc_equivariant_model_gives_equal_strands(scoring_models, genome, tmp_path, bundled_data):
    from genossm.models import from_pretrained

    model = from_pretrained(scoring_models["rc"])
    positions = [421_850, 421_900, 1_292_040]
    lines = []
    for pos in positions:
        ref, alt = pick_snv(genome, pos)
        fwd, rc = hand_snv_llr(model, genome, pos, ref, alt)
        assert fwd == pytest.approx(rc, abs=1e-5)
        lines.append(f"20\t{pos}\t.\t{ref}\t{alt}\t.\t.\t.\n")
    vcf = write(tmp_path / "snvs.vcf", HEADER + "".join(lines))
    score(scoring_models, "rc", vcf, tmp_path / "auto.tsv", bundled_data / SLICE, window_len=W)  # auto: forward only
    score(scoring_models, "rc", vcf, tmp_path / "both.tsv", bundled_data / SLICE, window_len=W, strands="both")
    a = pd.read_csv(tmp_path / "auto.tsv", sep="\t")["llr"].to_numpy()
    b = pd.read_csv(tmp_path / "both.tsv", sep="\t")["llr"].to_numpy()
    np.testing.assert_allclose(a, b, atol=1e-5)


def hand_pll(model, tokens, positions):
    """sum over positions of log P(true base | rest) + log 4, masking one position at a time."""
    total = 0.0
    for i in positions:
        m = tokens.copy()
        m[i] = tokenizer.MASK
        total += float(logp(model, m)[i, tokens[i]]) + math.log(4)
    return total


def test_indel_pll_difference_equals_hand_computation(scoring_models, genome, tmp_path, bundled_data):
    from genossm.models import from_pretrained

    model = from_pretrained(scoring_models["plain"])
    pos, ref_allele, alt_allele = 1_600_125, "GAA", "G"  # a real deletion of the VCF
    assert genome.fetch("20", pos - 1, pos + 2).upper() == ref_allele
    k = 2
    clen = genome.all_lengths["20"]
    start, end = place_window(pos - 1 + len(ref_allele) // 2, W, clen)
    ref_win = tokenizer.encode(genome.fetch("20", start, end))
    p = pos - 1 - start
    right = genome.fetch("20", pos - 1 + 3, pos - 1 + 3 + (W - p - 1))
    alt_win = np.concatenate([ref_win[:p], tokenizer.encode(alt_allele), tokenizer.encode(right)])
    assert len(alt_win) == W
    pll_ref = hand_pll(model, ref_win, range(p - k, p + 3 + k))
    pll_alt = hand_pll(model, alt_win, range(p - k, p + 1 + k))
    expected = pll_alt - pll_ref
    vcf = write(tmp_path / "del.vcf", HEADER + f"20\t{pos}\t.\t{ref_allele}\t{alt_allele}\t.\t.\t.\n")
    score(scoring_models, "plain", vcf, tmp_path / "d.tsv", bundled_data / SLICE, window_len=W, strands="forward", indel_flank=k)
    got = pd.read_csv(tmp_path / "d.tsv", sep="\t")
    assert got["kind"][0] == "indel"
    assert got["llr"][0] == pytest.approx(expected, abs=1e-4)


def test_rows_per_model_call_do_not_change_scores(scoring_models, tmp_path, bundled_data, monkeypatch):
    calls = []
    forward = BiMambaLM.forward
    monkeypatch.setattr(BiMambaLM, "forward", lambda self, x, **kw: calls.append(x.shape[0]) or forward(self, x, **kw))
    with gzip.open(bundled_data / INDELS, "rt") as fh:
        lines = [line for line in fh if not line.startswith("#")][:6]
    vcf = write(tmp_path / "six.vcf", HEADER + "".join(lines))
    tables = {}
    for per_forward in (W, 4 * W, None):  # one window per call, four, the CPU default (all windows of a batch)
        calls.clear()
        score(scoring_models, "plain", vcf, tmp_path / "i.tsv", bundled_data / SLICE, window_len=W, indel_flank=1,
            emb_dist=False, tokens_per_forward=per_forward)
        tables[per_forward] = pd.read_csv(tmp_path / "i.tsv", sep="\t")
        if per_forward:
            assert max(calls) == per_forward // W
        else:  # the CPU default takes every window of a batch in one call
            assert max(calls) > 4
    assert tables[W]["llr"].notna().sum() > 3
    for other in (4 * W, None):
        np.testing.assert_allclose(tables[other]["llr"], tables[W]["llr"], rtol=1e-6, atol=1e-6)


def test_causal_model_uses_window_log_likelihood(scoring_models, genome, tmp_path, bundled_data):
    from genossm.models import from_pretrained

    model = from_pretrained(scoring_models["causal"])
    pos = 421_900
    ref, alt = pick_snv(genome, pos)
    start, end = place_window(pos - 1, W, genome.all_lengths["20"])
    win = tokenizer.encode(genome.fetch("20", start, end))
    alt_win = win.copy()
    alt_win[pos - 1 - start] = tokenizer.encode(alt)[0]

    def ll(t):
        lp = logp(model, t)
        return sum(float(lp[i, t[i + 1]]) + math.log(4) for i in range(len(t) - 1))

    vcf = write(tmp_path / "c.vcf", HEADER + f"20\t{pos}\t.\t{ref}\t{alt}\t.\t.\t.\n")
    score(scoring_models, "causal", vcf, tmp_path / "c.tsv", bundled_data / SLICE, window_len=W, strands="forward")
    assert pd.read_csv(tmp_path / "c.tsv", sep="\t")["llr"][0] == pytest.approx(ll(alt_win) - ll(win), abs=1e-4)


def test_edge_of_contig_variants_use_a_shifted_window(scoring_models, genome, tmp_path):
    from genossm.models import from_pretrained

    model = from_pretrained(scoring_models["plain"])
    seq = genome.fetch("20", 421_000, 421_300)  # 300 real bases as a small contig of their own
    fasta = tmp_path / "edge.fa"
    fasta.write_text(">20\n" + seq + "\n")
    edge = Genome(fasta)
    rows = []
    for pos in (1, 3, 298, 300):
        ref, alt = pick_snv(edge, pos)
        rows.append((pos, ref, alt))
    vcf = write(tmp_path / "edge.vcf", HEADER.replace("63025520", "300") + "".join(
        f"20\t{p}\t.\t{r}\t{a}\t.\t.\t.\n" for p, r, a in rows))
    score_variants(scoring_models["plain"], fasta, tmp_path / "edge.tsv", vcf, window_len=W, strands="forward", progress=False)
    got = pd.read_csv(tmp_path / "edge.tsv", sep="\t")
    assert got["reason"].isna().all() and got["llr"].notna().all()
    for (pos, ref, alt), llr in zip(rows, got["llr"]):
        assert llr == pytest.approx(hand_snv_llr(model, edge, pos, ref, alt)[0], abs=1e-5)


def test_planted_problems_keep_every_record_in_order(scoring_models, genome, tmp_path, bundled_data):
    ok_ref, ok_alt = pick_snv(genome, 421_900)
    wrong = "ACGT".replace(genome.fetch("20", 421_901, 421_902).upper(), "")[0]
    del_ref = genome.fetch("20", 421_950, 421_953).upper()
    multi_ref = genome.fetch("20", 421_960, 421_961).upper()
    m_alts = [b for b in "ACGT" if b != multi_ref]
    body = "".join([
        f"20\t421900\tsnv\t{ok_ref}\t{ok_alt}\t.\tPASS\tDP=3\n",
        f"20\t421902\tmismatch\t{wrong}\tA\t.\tPASS\tDP=4\n",
        "7\t100\tunknown\tA\tC\t.\t.\t.\n",
        "20\t63025530\tpast\tA\tC\t.\t.\t.\n",
        f"20\t421951\tdeletion\t{del_ref}\t{del_ref[0]}\t.\t.\t.\n",
        f"20\t421961\tmulti\t{multi_ref}\t{m_alts[0]},<DEL>,{m_alts[1]}\t.\t.\t.\n",
    ])
    vcf = write(tmp_path / "planted.vcf", HEADER.replace("#CHROM", '##INFO=<ID=DP,Number=1,Type=Integer,Description="depth">\n#CHROM') + body)
    summary = score(scoring_models, "rc", vcf, tmp_path / "planted.vcf.gz", bundled_data / SLICE, window_len=W,
                  embeddings=str(tmp_path / "emb.npy"))
    with pysam.VariantFile(str(tmp_path / "planted.vcf.gz")) as vf:
        recs = list(vf)
        assert "DP" in vf.header.info
    assert [r.id for r in recs] == ["snv", "mismatch", "unknown", "past", "deletion", "multi"]
    by_id = {r.id: r for r in recs}
    assert by_id["snv"].info["DP"] == 3 and by_id["snv"].filter.keys() == ["PASS"]
    assert by_id["snv"].info["GENOSSM_LLR"][0] is not None and by_id["snv"].info["GENOSSM_EMB_DIST"][0] >= 0
    assert "GENOSSM_SKIP" not in by_id["snv"].info
    for rid, reason in (("mismatch", "ref_mismatch"), ("unknown", "contig_absent"), ("past", "beyond_contig_end")):
        assert by_id[rid].info["GENOSSM_SKIP"] == (reason,) and "GENOSSM_LLR" not in by_id[rid].info
    assert by_id["deletion"].info["GENOSSM_LLR"][0] is not None
    multi = by_id["multi"].info
    assert multi["GENOSSM_LLR"][0] is not None and multi["GENOSSM_LLR"][1] is None and multi["GENOSSM_LLR"][2] is not None
    assert multi["GENOSSM_SKIP"] == (".", "symbolic_allele", ".")
    assert summary.records == 6 and summary.alleles == 8
    assert dict(summary.skipped) == {"ref_mismatch": 1, "contig_absent": 1, "beyond_contig_end": 1, "symbolic_allele": 1}
    assert dict(summary.scored) == {"snv": 3, "indel": 1}
    table = pd.read_csv(tmp_path / "planted.tsv", sep="\t")
    assert list(table["id"]) == ["snv", "mismatch", "unknown", "past", "deletion", "multi", "multi", "multi"]
    assert list(table["allele"]) == [1, 1, 1, 1, 1, 1, 2, 3]
    np.testing.assert_allclose(table["llr"][table["id"] == "snv"], [by_id["snv"].info["GENOSSM_LLR"][0]], atol=1e-5)
    emb = np.load(tmp_path / "emb.npy")
    assert emb.shape == (8, 2, 16)
    assert np.isnan(emb[1]).all() and np.isfinite(emb[0]).all()
    cos = emb[0, 0] @ emb[0, 1] / np.linalg.norm(emb[0, 0]) / np.linalg.norm(emb[0, 1])
    assert table["emb_dist"][0] == pytest.approx(1 - cos, abs=1e-4)
    # one allele per batch: a batch with nothing to embed still writes its (NaN) rows, so later rows stay aligned
    score(scoring_models, "rc", vcf, tmp_path / "one.tsv", bundled_data / SLICE, window_len=W, alleles_per_batch=1,
        embeddings=str(tmp_path / "one.npy"))
    np.testing.assert_allclose(np.load(tmp_path / "one.npy"), emb, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_shipped_indel_vcf_every_record_in_order(scoring_models, tmp_path, bundled_data):
    out = tmp_path / "indels.vcf.gz"
    # 40: the longest allele (a 35-bp insertion) plus one flank base each side fits
    summary = score(scoring_models, "rc", bundled_data / INDELS, out, bundled_data / SLICE, window_len=40, indel_flank=1,
                  emb_dist=False, alleles_per_batch=64, table=str(tmp_path / "indels.parquet"))
    with gzip.open(bundled_data / INDELS, "rb") as fh:
        with pysam.VariantFile(fh) as vin:
            original = [(r.chrom, r.pos, r.ref, r.alts, dict(r.info)) for r in vin]
            header_lines = [str(h) for h in vin.header.records]
    with pysam.VariantFile(str(out)) as vf:
        got = list(vf)
        out_header = [str(h) for h in vf.header.records]
    assert [(r.chrom, r.pos, r.ref, r.alts) for r in got] == [o[:4] for o in original]
    for r, o in zip(got, original):
        assert {k: v for k, v in r.info.items() if not k.startswith("GENOSSM_")} == o[4]
        assert r.info["GENOSSM_LLR"][0] is not None
    assert all(line in out_header for line in header_lines)
    assert summary.alleles == 194 and summary.scored["indel"] == 194
    table = pd.read_parquet(tmp_path / "indels.parquet")
    assert list(table["pos"]) == [o[1] for o in original]
    np.testing.assert_allclose(table["llr"], [r.info["GENOSSM_LLR"][0] for r in got], rtol=1e-5, atol=1e-5)


def test_saturation_mutagenesis(scoring_models, genome, tmp_path, bundled_data):
    from genossm.models import from_pretrained

    out = tmp_path / "sat.tsv"
    score(scoring_models, "rc", None, out, bundled_data / SLICE, scan="saturation", region="20:421901-421920", window_len=W,
        emb_dist=False)
    table = pd.read_csv(out, sep="\t")
    assert len(table) == 60 and list(table["pos"]) == [p for p in range(421901, 421921) for _ in range(3)]
    ref = genome.fetch("20", 421900, 421920).upper()
    assert "".join(table["ref"][::3]) == ref
    assert all(a != r for a, r in zip(table["alt"], table["ref"]))
    png = tmp_path / "sat.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = from_pretrained(scoring_models["rc"])
    row = table.iloc[7]
    assert row["llr"] == pytest.approx(hand_snv_llr(model, genome, int(row["pos"]), row["ref"], row["alt"])[0], abs=1e-5)
    with pytest.raises(GenossmError, match="at most 10,000"):
        score(scoring_models, "rc", None, out, bundled_data / SLICE, scan="saturation", region="20:1-20001")


def test_bad_options_are_user_errors(scoring_models, tmp_path, bundled_data):
    with pytest.raises(GenossmError, match="window_len"):
        score(scoring_models, "rc", bundled_data / INDELS, tmp_path / "x.tsv", bundled_data / SLICE, window_len=4)
    with pytest.raises(GenossmError, match="TSV"):
        tsv = write(tmp_path / "v.tsv", "chrom\tpos\tref\talt\n20\t5\tA\tC\n")
        score(scoring_models, "rc", tsv, tmp_path / "x.vcf", bundled_data / SLICE)
    assert not (tmp_path / "x.tsv").exists()


@pytest.mark.slow
def test_streaming_holds_one_batch(scoring_models, genome, tmp_path, bundled_data, monkeypatch):
    """20k records stream through: the reader never holds more than one batch of alleles, and scores go to
    disk batch by batch (the writer keeps no list)."""
    rng = np.random.default_rng(0)
    seq = genome.fetch("20", 421_000, 423_000).upper()
    lines = []
    for i in range(20_000):
        off = int(rng.integers(0, len(seq)))
        ref = seq[off]
        lines.append(f"20\t{421_001 + off}\tv{i}\t{ref}\t{'ACGT'.replace(ref, '')[i % 3]}\t.\t.\t.\n")
    vcf = write(tmp_path / "big.vcf", HEADER + "".join(lines))
    seen = []

    import genossm.data.variant_windows as variant_windows
    from genossm.tasks.callbacks import ShardWriter

    class Spy(variant_windows.VariantBatches):
        def __iter__(self):
            seen.append(self)
            for batch in super().__iter__():
                assert self.max_pending <= 512
                yield batch

    monkeypatch.setattr(variant_windows, "VariantBatches", Spy)  # the run imports it when it starts
    writes = []
    original = ShardWriter.write_on_batch_end

    def spy_write(self, trainer, pl_module, prediction, *args, **kwargs):
        writes.append(int(prediction["index"].shape[0]))
        return original(self, trainer, pl_module, prediction, *args, **kwargs)

    monkeypatch.setattr(ShardWriter, "write_on_batch_end", spy_write)
    summary = score(scoring_models, "rc", vcf, tmp_path / "big.tsv", bundled_data / SLICE, window_len=8, emb_dist=False,
                  alleles_per_batch=512)
    assert summary.alleles == 20_000 and summary.scored["snv"] == 20_000
    assert seen and seen[0].max_pending <= 512
    assert len(writes) == 40 and max(writes) == 512  # one write per batch, as the batches came
    table = pd.read_csv(tmp_path / "big.tsv", sep="\t", usecols=["id", "llr"])
    assert list(table["id"]) == [f"v{i}" for i in range(20_000)] and table["llr"].notna().all()
