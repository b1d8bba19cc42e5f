"""The windows a variant is scored in and the batches built from them, against hand-cut strings of a small
random contig: windows centred on the allele, shifted at the contig's edges, the alt window of an indel, the
masked sequences and terms of SNVs, indels and causal models, and the batching of the allele stream."""

from __future__ import annotations

import numpy as np
import pytest

from genossm.data import tokenizer
from genossm.data.variant_windows import (
    WHOLE_WINDOW,
    AlleleWindows,
    BatchBuilder,
    VariantBatches,
    _group,
    place_window,
)
from genossm.data import variant_windows
from genossm.data.variants import REASON_CODES, Allele, VariantRecord

CONTIG = "".join(np.random.default_rng(3).choice(list("ACGT"), 60))
L = len(CONTIG)


def fetch(contig, start, end):
    assert contig == "c"
    return tokenizer.encode(CONTIG[start:end])


def allele(pos, ref, alt, index=0, reason=None):
    """An allele at 1-based ``pos`` of the contig; ``ref`` None reads REF from the contig (one base)."""
    ref = CONTIG[pos - 1] if ref is None else ref
    kind = "snv" if len(ref) == len(alt) == 1 else ("mnv" if len(ref) == len(alt) else "indel")
    return Allele(index=index, record=index, allele=1, chrom="c", pos=pos, id=None, ref=ref, alt=alt, kind=kind,
                  contig="c", reason=reason)


def other(base):
    return "ACGT".replace(base, "")[0]


def decoded(tokens) -> str:
    return "".join("ACGTN"[int(t)] if int(t) < 5 else "?" for t in tokens)


def test_place_window_edges():
    assert place_window(500, 100, 10_000) == (450, 550)
    assert place_window(3, 100, 10_000) == (0, 100)  # shifted right at the contig start
    assert place_window(9_998, 100, 10_000) == (9_900, 10_000)  # shifted left at the end
    assert place_window(10, 100, 60) == (0, 60)  # a short contig is used whole


@pytest.mark.parametrize("window_len", [1, 8, 9, 60, 61])
def test_place_window_is_the_hand_clamp_everywhere(window_len):
    for center in range(L):
        start = center - window_len // 2
        start = max(start, 0)
        start = min(start, L - window_len)
        want = (0, L) if window_len >= L else (start, start + window_len)
        assert place_window(center, window_len, L) == want, center


def test_snv_window_is_centred_and_the_alt_window_swaps_one_base():
    pos, w = 30, 10  # 0-based 29 sits at offset w // 2 = 5 of [24, 34)
    a = allele(pos, None, other(CONTIG[pos - 1]))
    win = AlleleWindows(a, w, indel_flank=2, contig_len=L, fetch=fetch)
    assert (win.start, win.end, win.ref_offset) == (24, 34, 5)
    assert decoded(win.ref) == CONTIG[24:34]
    assert (win.alt_start, win.alt_end, win.alt_offset) == (24, 34, 5)
    assert decoded(win.alt) == CONTIG[24:29] + a.alt + CONTIG[30:34]


@pytest.mark.parametrize("pos, start", [(1, 0), (3, 0), (58, 50), (60, 50)])
def test_windows_at_the_contig_edges_shift_inside(pos, start):
    w = 10
    a = allele(pos, None, other(CONTIG[pos - 1]))
    win = AlleleWindows(a, w, indel_flank=2, contig_len=L, fetch=fetch)
    assert (win.start, win.end) == (start, start + w)
    assert win.ref_offset == pos - 1 - start
    assert decoded(win.ref) == CONTIG[start:start + w]
    assert decoded(win.alt) == CONTIG[start:pos - 1] + a.alt + CONTIG[pos:start + w]


def test_deletion_alt_window_keeps_the_left_flank_and_fills_the_right():
    w, p = 12, 30  # REF = 3 bases at 0-based 30..32, ALT = its first base
    ref = CONTIG[p:p + 3]
    a = allele(p + 1, ref, ref[0])
    win = AlleleWindows(a, w, indel_flank=2, contig_len=L, fetch=fetch)
    start = p + 3 // 2 - w // 2  # centred on the middle of REF
    assert (win.start, win.end) == (start, start + w)
    assert decoded(win.ref) == CONTIG[start:start + w]
    off = p - start
    assert win.ref_offset == win.alt_offset == off
    right = CONTIG[p + 3:p + 3 + (w - off - 1)]  # as many bases as make the window w long again
    assert decoded(win.alt) == CONTIG[start:p] + ref[0] + right and len(win.alt) == w


def test_insertion_alt_window_is_as_long_as_the_ref_window():
    w, p = 12, 20
    a = allele(p + 1, CONTIG[p], CONTIG[p] + "ACG")
    win = AlleleWindows(a, w, indel_flank=1, contig_len=L, fetch=fetch)
    start = p - w // 2
    off = p - start
    assert (win.start, win.ref_offset, win.alt_offset) == (start, off, off)
    assert decoded(win.alt) == CONTIG[start:p] + a.alt + CONTIG[p + 1:p + 1 + (w - off - 4)]
    assert len(win.alt) == w


def test_deletion_at_the_contig_end_shifts_the_alt_window_left():
    w, p = 10, 55  # REF = 0-based 55..58; the right flank would run past the end (60)
    ref = CONTIG[p:p + 4]
    a = allele(p + 1, ref, ref[0])
    win = AlleleWindows(a, w, indel_flank=1, contig_len=L, fetch=fetch)
    assert (win.start, win.end) == (L - w, L)
    # the alt window ends at the contig end and takes the missing bases from the left instead:
    # w bases = left flank + the one ALT base + what is left of the contig after REF
    right = CONTIG[p + 4:]
    alt_start = p - (w - 1 - len(right))
    assert (win.alt_start, win.alt_end) == (alt_start, L)
    assert decoded(win.alt) == CONTIG[alt_start:p] + ref[0] + right and len(win.alt) == w
    assert win.alt_offset == p - alt_start


def test_an_allele_that_does_not_fit_is_refused():
    with pytest.raises(RuntimeError, match="does not fit"):
        AlleleWindows(allele(20, CONTIG[19:31], "A"), 8, indel_flank=0, contig_len=L, fetch=fetch)


def builder(window_len=10, indel_flank=2, strands=1, causal=False, emb_dist=False, emb_strands=1):
    return BatchBuilder(fetch, {"c": L}, window_len=window_len, indel_flank=indel_flank, emb_dist=emb_dist,
                        causal=causal, strands=strands, emb_strands=emb_strands)


def terms_of(group):
    return list(zip(group["term_row"].tolist(), group["term_pos"].tolist(), group["term_base"].tolist(),
                    group["term_coef"].tolist(), group["term_owner"].tolist()))


def test_snv_alleles_at_one_position_share_one_masked_window():
    p, w = 30, 10
    r = CONTIG[p - 1]
    alts = [b for b in "ACGT" if b != r]
    batch = builder(window_len=w).build([allele(p, None, alt, index=i) for i, alt in enumerate(alts)])
    (group,) = batch["logit_groups"]
    start, off = p - 1 - w // 2, w // 2
    want = tokenizer.encode(CONTIG[start:start + w])
    want[off] = tokenizer.MASK
    assert group["tokens"].tolist() == [want.tolist()]  # one masked sequence for three alleles
    code = {b: int(tokenizer.encode(b)[0]) for b in "ACGT"}
    # owner = 2 * allele + strand: log P(alt) - log P(ref) at the masked position, per allele
    assert terms_of(group) == [t for i, alt in enumerate(alts)
                               for t in ((0, off, code[alt], 1.0, 2 * i), (0, off, code[r], -1.0, 2 * i))]
    assert batch["index"].tolist() == [0, 1, 2] and batch["reason"].tolist() == [0, 0, 0]


def test_both_strands_read_the_reverse_complement():
    p, w = 30, 10
    a = allele(p, None, other(CONTIG[p - 1]))
    (group,) = builder(window_len=w, strands=2).build([a])["logit_groups"]
    start, off = p - 1 - w // 2, w // 2
    fwd = tokenizer.encode(CONTIG[start:start + w])
    fwd[off] = tokenizer.MASK
    rc = tokenizer.reverse_complement(fwd)
    assert group["tokens"].tolist() == [fwd.tolist(), rc.tolist()]
    alt, ref = int(tokenizer.encode(a.alt)[0]), int(tokenizer.encode(a.ref)[0])
    assert terms_of(group) == [(0, off, alt, 1.0, 0), (0, off, ref, -1.0, 0),
                               (1, w - 1 - off, 3 - alt, 1.0, 1), (1, w - 1 - off, 3 - ref, -1.0, 1)]


def test_indel_terms_mask_the_allele_and_its_flanks_one_at_a_time():
    w, p, k = 12, 30, 2
    ref = CONTIG[p:p + 3]
    a = allele(p + 1, ref, ref[0])
    batch = builder(window_len=w, indel_flank=k).build([a])
    (group,) = batch["logit_groups"]  # ref and alt windows are both w long: one group
    start = p + 1 - w // 2
    off = p - start
    ref_win = CONTIG[start:start + w]
    alt_win = CONTIG[start:p] + ref[0] + CONTIG[p + 3:p + 3 + (w - off - 1)]
    want = []  # (masked sequence, position, base, coef) in the builder's order: ref window, then alt window
    for seq, n, coef in ((ref_win, 3, -1.0), (alt_win, 1, 1.0)):
        for i in range(off - k, off + n + k):
            masked = tokenizer.encode(seq)
            masked[i] = tokenizer.MASK
            want.append((masked.tolist(), i, int(tokenizer.encode(seq[i])[0]), coef))
    tokens = group["tokens"].tolist()
    got = [(tokens[row], pos, base, coef) for row, pos, base, coef, owner in terms_of(group)]
    assert got == want and len(tokens) == (3 + 2 * k) + (1 + 2 * k)
    assert {owner for *_, owner in terms_of(group)} == {0}


def test_causal_model_scores_whole_windows():
    w, p = 10, 30
    a = allele(p, None, other(CONTIG[p - 1]))
    (group,) = builder(window_len=w, causal=True).build([a])["logit_groups"]
    start = p - 1 - w // 2
    ref_win = CONTIG[start:start + w]
    alt_win = ref_win[:w // 2] + a.alt + ref_win[w // 2 + 1:]
    assert [decoded(t) for t in group["tokens"]] == [ref_win, alt_win]
    assert terms_of(group) == [(0, WHOLE_WINDOW, -1, -1.0, 0), (1, WHOLE_WINDOW, -1, 1.0, 0)]


def test_an_allele_with_a_reason_gets_no_terms_but_keeps_its_row():
    ok = allele(30, None, other(CONTIG[29]), index=0)
    bad = allele(40, "A", "C", index=1, reason="ref_mismatch")
    batch = builder().build([ok, bad])
    assert batch["index"].tolist() == [0, 1]
    assert batch["reason"].tolist() == [0, REASON_CODES.index("ref_mismatch")]
    assert {owner for *_, owner in terms_of(batch["logit_groups"][0])} == {0}
    assert batch["emb_ok"].tolist() == [False, False]  # emb_dist is off


def test_embedding_windows_are_the_ref_and_alt_windows():
    w = 12
    ref = CONTIG[30:33]
    a = allele(31, ref, ref[0])
    batch = builder(window_len=w, emb_dist=True).build([a])
    (group,) = batch["emb_groups"]
    seqs = [decoded(t) for t in group["tokens"]]
    win = AlleleWindows(a, w, 2, L, fetch)
    assert seqs == [decoded(win.ref), decoded(win.alt)]
    assert batch["emb_ref"].tolist() == [[0]] and batch["emb_alt"].tolist() == [[1]] and batch["emb_ok"].tolist() == [True]


def test_sequences_are_grouped_by_length():
    seqs = [np.array([0, 1, 2]), np.array([3, 3, 3, 3, 3]), np.array([2, 2, 2])]
    terms = [variant_windows.Term(2, 1, 2, 1.0, 0), variant_windows.Term(1, 4, 3, -1.0, 2)]
    short, long = _group(seqs, terms)
    assert short["ids"].tolist() == [0, 2] and short["tokens"].tolist() == [[0, 1, 2], [2, 2, 2]]
    assert short["term_row"].tolist() == [1] and short["term_pos"].tolist() == [1]  # sequence 2 is row 1 here
    assert long["ids"].tolist() == [1] and long["term_row"].tolist() == [0] and long["term_owner"].tolist() == [2]


def records(n_records, alts_per_record=1):
    return [VariantRecord(index=i, line=None, chrom="c", pos=11 + i, id=None, ref=CONTIG[10 + i],
                          alts=tuple(b for b in "ACGT" if b != CONTIG[10 + i])[:alts_per_record])
            for i in range(n_records)]


def test_batches_hold_batch_size_alleles_in_input_order():
    recs = records(5, alts_per_record=2)  # 10 alleles
    batches = VariantBatches(lambda: iter(recs), "unused.fa", batch_size=4, builder_args={})
    got = [[a.index for a in b] for b in batches._alleles()]
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batches.max_pending == 4  # two records' alleles, then a batch goes


@pytest.mark.parametrize("world, rank", [(1, 0), (2, 0), (2, 1)])
def test_ranks_take_every_world_th_batch(tmp_path, monkeypatch, world, rank):
    fasta = tmp_path / "c.fa"
    fasta.write_text(">c\n" + CONTIG + "\n")
    monkeypatch.setattr(variant_windows, "rank_and_world", lambda: (rank, world))
    recs = records(7)
    args = dict(window_len=10, indel_flank=1, emb_dist=False, causal=False, strands=1, emb_strands=1)
    batches = VariantBatches(lambda: iter(recs), str(fasta), batch_size=3, builder_args=args,
                             cache_dir=str(tmp_path / "cache"))
    got = list(batches)
    all_batches = [[0, 1, 2], [3, 4, 5], [6]]
    assert [b["index"].tolist() for b in got] == all_batches[rank::world]
    hand = builder(window_len=10, indel_flank=1)
    for b in got:  # checked against the FASTA (nothing to refuse), then built as from the alleles by hand
        assert b["reason"].tolist() == [0] * len(b["index"])
        alleles = [allele(11 + i, None, recs[i].alts[0], index=i) for i in b["index"].tolist()]
        want = hand.build(alleles)["logit_groups"][0]
        assert b["logit_groups"][0]["tokens"].equal(want["tokens"]) and terms_of(b["logit_groups"][0]) == terms_of(want)
