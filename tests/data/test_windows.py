"""Token cache and windows: cache == genome, rebuilt on change, splits never overlap, windows stay inside
their split, padding, reverse complement, N skipping, repeatable seeding across workers and ranks."""

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from genossm.data import tokenizer as tk
from genossm.data.genome import Genome
from genossm.data.intervals import SplitSpec, make_splits, merge_intervals, subtract_intervals
from genossm.data.token_cache import TokenCache
from genossm.data.windows import RandomWindows, TiledWindows, unpack_batch
from genossm.errors import GenossmError

DATA = Path(__file__).resolve().parents[2] / "data"
CHLORO = DATA / "athaliana_chloroplast.fa"
MULTI = DATA / "multi_contig.fa"
IRB, SSC, IRA = (84170, 110434), (110434, 128214), (128214, 154478)  # 0-based half-open


@pytest.fixture
def multi(tmp_path):
    return TokenCache.open(MULTI, cache_dir=tmp_path)


def inside(intervals, contig, start, end):
    return any(c == contig and s <= start and end <= e for c, s, e in intervals)


@pytest.mark.parametrize("name", ["multi_contig.fa", "multi_contig.fa.gz", "multi_contig.bgzip.fa.gz",
                                  "human_chr20_slice.fa.gz", "athaliana_chloroplast_softmasked.fa"])
def test_cache_equals_the_genome(name, tmp_path):
    genome = Genome(DATA / name, cache_dir=tmp_path)
    cache = TokenCache.open(DATA / name, cache_dir=tmp_path)
    assert cache.lengths == genome.lengths
    for contig, length in genome.lengths.items():
        ids, soft = cache.tokens(contig, 0, length)
        g_ids, g_soft = genome.fetch_tokens(contig, 0, length)
        assert np.array_equal(ids, g_ids) and np.array_equal(soft, g_soft)
        assert np.array_equal(cache.tokens(contig, 100, 250)[0], g_ids[100:250])


def test_cache_is_reused_then_rebuilt_when_the_fasta_changes(tmp_path, caplog):
    path = tmp_path / "g.fa"
    path.write_text(">a\nACGTACGTAC\nGT\n>b\nnnnnACGT\n")
    with caplog.at_level(logging.INFO, logger="genossm.data.token_cache"):
        first = TokenCache.open(path, cache_dir=tmp_path / "c")
        files = {p: p.stat().st_mtime_ns for p in first.folder.glob("*.u8")}
        again = TokenCache.open(path, cache_dir=tmp_path / "c")
    assert sum("encoding" in r.message for r in caplog.records) == 1
    assert {p: p.stat().st_mtime_ns for p in again.folder.glob("*.u8")} == files
    assert tk.decode(*again.tokens("b", 0, 8)) == "nnnnACGT"
    path.write_text(">a\nTTTTTTTTTT\nGG\n>b\nACGTnnnn\n")  # same size: only the time tells
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 10**9))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="genossm.data.token_cache"):
        rebuilt = TokenCache.open(path, cache_dir=tmp_path / "c")
    assert any("changed since" in r.message for r in caplog.records)
    assert tk.decode(*rebuilt.tokens("a", 0, 12)) == "TTTTTTTTTTGG"
    assert tk.decode(*rebuilt.tokens("b", 0, 8)) == "ACGTnnnn"


def test_only_selected_contigs_are_encoded(tmp_path, caplog):
    one = TokenCache.open(MULTI, cache_dir=tmp_path, contigs=["20"])
    assert one.contig_names == ["chr20"] and len(list(one.folder.glob("*.u8"))) == 1
    with pytest.raises(GenossmError, match="not selected"):
        one.packed("ecoli_k12")
    every = TokenCache.open(MULTI, cache_dir=tmp_path)
    assert every.contig_names == ["chr20", "ecoli_k12", "saureus_n315"] and len(list(every.folder.glob("*.u8"))) == 3
    with pytest.raises(GenossmError, match="outside the contig"):
        every.tokens("saureus_n315", 29_000, 30_001)


def test_interval_arithmetic():
    assert merge_intervals([("a", 5, 10), ("a", 0, 3), ("a", 3, 4), ("b", 1, 2), ("a", 9, 12)]) == [("a", 0, 4), ("a", 5, 12), ("b", 1, 2)]
    assert subtract_intervals([("a", 0, 100)], [("a", 10, 20), ("a", 50, 120)]) == [("a", 0, 10), ("a", 20, 50)]


def test_demo_split_keeps_the_inverted_repeats_in_training(tmp_path):
    cache = TokenCache.open(CHLORO, cache_dir=tmp_path)
    spec = SplitSpec(**{f"{s}_bed": str(DATA / f"athaliana_chloroplast.{s}.bed") for s in ("train", "val", "test")})
    splits = make_splits(cache, spec)
    name = cache.contig_names[0]
    covered = np.zeros(cache.lengths[name], dtype=int)
    for ivs in splits.values():
        for _, s, e in ivs:
            covered[s:e] += 1
    assert (covered == 1).all()  # a partition: no overlap, nothing left out
    for split in ("val", "test"):
        for _, s, e in splits[split]:
            for lo, hi in (IRB, IRA):
                assert e <= lo or s >= hi, f"{split} touches an inverted repeat"
    assert inside(splits["val"], name, *splits["val"][0][1:]) and SSC[0] <= splits["val"][0][1] < splits["val"][0][2] <= SSC[1]
    for lo, hi in (IRB, IRA):
        assert inside(splits["train"], name, lo, hi)


def test_splits_by_contig_and_fraction(multi):
    splits = make_splits(multi, SplitSpec(val_contigs=["20"], test_fraction=0.1))
    assert splits["val"] == [("chr20", 0, 40_000)]
    assert splits["test"] == [("ecoli_k12", 36_000, 40_000), ("saureus_n315", 27_000, 30_000)]
    assert splits["train"] == [("ecoli_k12", 0, 36_000), ("saureus_n315", 0, 27_000)]
    with pytest.raises(GenossmError, match="not among the selected"):
        make_splits(TokenCache.open(MULTI, cache_dir=multi.folder.parent.parent, contigs=["ecoli_k12"]), SplitSpec(val_contigs=["chr20"]))


def test_bed_errors_name_the_file_and_line(multi, tmp_path):
    bad = tmp_path / "bad.bed"
    for text, message in [
        ("chr20\t0\t100\nchr20\tx\t5\n", r"bad\.bed: line 2: start and end must be integers"),
        ("chr7\t0\t100\n", r"bad\.bed: line 1: .*no contig named 'chr7'"),
        ("# header\nchr20\t0\t50000\n", r"bad\.bed: line 2: interval .* outside the contig"),
        ("chr20 10\n", r"bad\.bed: line 1: expected at least 3 columns"),
    ]:
        bad.write_text(text)
        with pytest.raises(GenossmError, match=message):
            make_splits(multi, SplitSpec(val_bed=str(bad)))
    val, test, train = tmp_path / "v.bed", tmp_path / "t.bed", tmp_path / "tr.bed"
    val.write_text("20\t100\t200\n")
    test.write_text("chr20\t150\t300\n")
    with pytest.raises(GenossmError, match="validation and test splits overlap at chr20:150-200"):
        make_splits(multi, SplitSpec(val_bed=str(val), test_bed=str(test)))
    train.write_text("ecoli_k12\t0\t1000\nchr20\t0\t120\n")
    with pytest.raises(GenossmError, match=r"tr\.bed: training intervals overlap .* chr20:100-120"):
        make_splits(multi, SplitSpec(val_bed=str(val), train_bed=str(train)))


def forward_view(batch, row):
    """The row's tokens and soft-mask in forward orientation with padding removed."""
    ids, soft, valid = batch["tokens"][row], batch["softmask"][row], batch["valid"][row]
    if batch["rc"][row]:
        ids, soft = tk.reverse_complement(ids, soft)
        valid = valid.flip(-1)
    return ids[valid].numpy().astype(np.uint8), soft[valid].numpy()


def test_random_windows_stay_inside_their_split_and_match_the_cache(multi):
    splits = make_splits(multi, SplitSpec(val_fraction=0.25, test_fraction=0.25))
    ds = RandomWindows(multi, splits["train"], 4096, 16, seed=1, rc_augment=True, max_n_fraction=1.0, samples_per_epoch=160)
    n_rc = 0
    for batch in ds:
        assert batch["tokens"].dtype == torch.long and batch["tokens"].shape == (16, 4096)
        for row in range(16):
            contig, start = batch["contig"][row], int(batch["start"][row])
            ids, soft = forward_view(batch, row)
            assert inside(splits["train"], contig, start, start + len(ids))
            c_ids, c_soft = multi.tokens(contig, start, start + len(ids))
            assert np.array_equal(ids, c_ids) and np.array_equal(soft, c_soft)
            assert (batch["tokens"][row][~batch["valid"][row]] == tk.PAD).all()
            n_rc += int(batch["rc"][row])
    assert 40 < n_rc < 120  # about half reverse-complemented


def test_windows_longer_than_the_interval_are_padded(multi):
    ds = RandomWindows(multi, [("saureus_n315", 0, 30_000)], 65_536, 2, samples_per_epoch=2, max_n_fraction=1.0)
    batch = next(iter(ds))
    assert batch["valid"].sum(1).tolist() == [30_000, 30_000]
    assert (batch["tokens"][:, 30_000:] == tk.PAD).all() and not batch["valid"][:, 30_000:].any()
    tiles = TiledWindows(multi, [("ecoli_k12", 1000, 3500)], 1000, 8)
    (batch,) = list(tiles)
    assert batch["start"].tolist() == [1000, 2000, 3000] and batch["valid"].sum(1).tolist() == [1000, 1000, 500]


def test_mostly_n_windows_are_skipped(multi):
    # chr20 in multi_contig.fa starts with 10 kb of telomeric N
    n_frac = lambda b: ((b["tokens"] == tk.N) & b["valid"]).sum(1).float() / b["valid"].sum(1)  # noqa: E731
    allow = RandomWindows(multi, [("chr20", 0, 40_000)], 2000, 64, samples_per_epoch=640, max_n_fraction=1.0)
    skip = RandomWindows(multi, [("chr20", 0, 40_000)], 2000, 64, samples_per_epoch=640, max_n_fraction=0.3)
    assert max(n_frac(b).max().item() for b in allow) > 0.9
    assert max(n_frac(b).max().item() for b in skip) <= 0.3
    tiles = TiledWindows(multi, [("chr20", 0, 40_000)], 2000, 4, max_n_fraction=0.5)
    assert [int(s) for b in tiles for s in b["start"]] == list(range(10_000, 40_000, 2000))


def test_tiles_cover_every_base_once(multi):
    ivs = [("chr20", 5_000, 17_345), ("saureus_n315", 0, 30_000)]
    tiles = TiledWindows(multi, ivs, 3000, 3, max_n_fraction=1.0)
    got = {c: [] for c, _, _ in ivs}
    for batch in tiles:
        for row in range(len(batch["contig"])):
            got[batch["contig"][row]].append(batch["tokens"][row][batch["valid"][row]].numpy())
    for c, s, e in ivs:
        assert np.array_equal(np.concatenate(got[c]), multi.tokens(c, s, e)[0])
    assert len(tiles) == sum(1 for _ in tiles)


def collect(loader):
    return [(b["contig"], b["start"].tolist(), b["rc"].tolist(), b["tokens"].sum().item()) for b in loader]


def test_batches_repeat_whatever_the_number_of_workers(multi):
    ds = RandomWindows(multi, [("ecoli_k12", 0, 40_000), ("saureus_n315", 0, 30_000)], 1000, 4, seed=7,
                       rc_augment=True, samples_per_epoch=40)
    runs = []
    for workers in (0, 1, 2):
        ds.set_epoch(3)
        loader = DataLoader(ds, batch_size=None, num_workers=workers)
        if workers:  # worker processes send one byte per base; unpack_batch restores the documented batch
            assert "packed" in next(iter(loader)) and "tokens" not in next(iter(loader))
        runs.append(collect(map(unpack_batch, loader)))
    assert len(runs[0]) == 10 and runs[0] == runs[1] == runs[2]
    ds.set_epoch(4)
    assert collect(ds) != runs[0]
    ds.seed = 8
    ds.set_epoch(3)
    assert collect(ds) != runs[0]


def test_ranks_read_different_windows(multi):
    common = dict(seed=0, samples_per_epoch=64, world_size=2)
    ivs = [("ecoli_k12", 0, 40_000)]
    r0 = RandomWindows(multi, ivs, 500, 4, rank=0, **common)
    r1 = RandomWindows(multi, ivs, 500, 4, rank=1, **common)
    assert len(r0) == len(r1) == 8
    starts0 = {s for b in r0 for s in b["start"].tolist()}
    starts1 = {s for b in r1 for s in b["start"].tolist()}
    assert len(starts0 & starts1) <= 2  # independent draws over 39,501 positions
    t0 = TiledWindows(multi, ivs, 500, 4, rank=0, world_size=2)
    t1 = TiledWindows(multi, ivs, 500, 4, rank=1, world_size=2)
    s0 = [s for b in t0 for s in b["start"].tolist()]
    s1 = [s for b in t1 for s in b["start"].tolist()]
    assert not set(s0) & set(s1) and sorted(s0 + s1) == list(range(0, 40_000, 500))


def test_bad_window_settings(multi):
    with pytest.raises(GenossmError, match="window_len and batch_size must be positive"):
        RandomWindows(multi, [("chr20", 0, 100)], 0, 4)
    with pytest.raises(GenossmError, match="max_n_fraction"):
        RandomWindows(multi, [("chr20", 0, 100)], 10, 4, max_n_fraction=1.5)
    with pytest.raises(GenossmError, match="training split is empty"):
        RandomWindows(multi, [], 10, 4)
