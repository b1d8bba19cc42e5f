"""A genome given as a list of FASTA files (``fasta=[a.fa,b.fa.gz]``): the same windows and splits as one
concatenated FASTA, one token cache per file, and clear errors for clashing contigs and bad files."""

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from Bio import SeqIO

from genossm.data.datamodule import GenomeDataModule
from genossm.data.token_cache import MultiTokenCache, TokenCache, open_tokens
from genossm.errors import GenossmError

DATA = Path(__file__).resolve().parents[2] / "data"
PLAIN = DATA / "athaliana_chloroplast.fa"  # NC_000932.1, plain text
BGZIP = DATA / "human_chr20_slice.fa.gz"  # 20, bgzip
MULTI = DATA / "multi_contig.fa"  # chr20, ecoli_k12, saureus_n315


@pytest.fixture
def concatenated(tmp_path) -> Path:
    """One plain FASTA holding the records of PLAIN then BGZIP."""
    path = tmp_path / "both.fa"
    with gzip.open(BGZIP, "rb") as handle:
        path.write_bytes(PLAIN.read_bytes() + handle.read())
    return path


SPLITS = [
    dict(val_fraction=0.1, test_fraction=0.05),
    dict(val_contigs=["chr20"], test_fraction=0.1),  # an alias of the second file's contig "20"
    dict(contigs="NC_.*|20", val_bed="BED", test_bed=str(DATA / "athaliana_chloroplast.test.bed")),
]


@pytest.mark.parametrize("split", SPLITS, ids=["fractions", "contigs", "bed"])
def test_two_files_give_the_windows_of_one_concatenated_fasta(split, concatenated, tmp_path):
    split = dict(split)
    if split.get("val_bed") == "BED":  # a BED file with intervals in both files
        bed = tmp_path / "val.bed"
        bed.write_text("NC_000932.1\t120000\t130000\nchr20\t150000\t170000\n")
        split["val_bed"] = str(bed)
    common = dict(window_len=700, batch_size=4, cache_dir=tmp_path / "cache", seed=5, **split)
    two = GenomeDataModule([PLAIN, BGZIP], **common)
    one = GenomeDataModule(concatenated, **common)
    two.setup()
    one.setup()
    assert isinstance(two.cache, MultiTokenCache) and isinstance(one.cache, TokenCache)
    assert two.cache.contig_names == one.cache.contig_names == ["NC_000932.1", "20"]
    for name in ("train", "val", "test"):
        assert two.intervals(name) == one.intervals(name), name
        assert two.intervals(name), name
    train_contigs = {c for c, _, _ in two.intervals("train")}
    assert {c for name in ("train", "val", "test") for c, _, _ in two.intervals(name)} == {"NC_000932.1", "20"}
    batches_two, batches_one = iter(two.train_dataloader()), iter(one.train_dataloader())
    contigs_seen = set()
    for _ in range(4):
        a, b = next(batches_two), next(batches_one)
        assert a["contig"] == b["contig"]
        contigs_seen.update(a["contig"])
        for key in ("tokens", "softmask", "valid", "start", "rc"):
            assert torch.equal(a[key], b[key]), key
    assert contigs_seen == train_contigs  # both files when both are in training
    for a, b in zip(two.val_dataloader(), one.val_dataloader()):
        assert a["contig"] == b["contig"] and torch.equal(a["tokens"], b["tokens"])


def test_each_file_has_its_own_cache_rebuilt_only_when_it_changes(tmp_path):
    first, second = tmp_path / "first.fa", tmp_path / "second.fa"
    shutil.copy(MULTI, first)
    shutil.copy(PLAIN, second)
    picked = ["ecoli_k12", "NC_000932.1"]
    cache = open_tokens([first, second], cache_dir=tmp_path / "c", contigs=picked)
    assert [c.fasta for c in cache.caches] == [first, second] and cache.caches[0].folder != cache.caches[1].folder
    assert cache.contig_names == picked and cache.file_of("NC_000932.1") == second and cache.file_of("chr20") == first
    records = {r.id: str(r.seq).upper() for r in SeqIO.parse(first, "fasta")}
    ids, _ = cache.tokens("ecoli_k12", 100, 160)
    assert "".join("ACGTN"[i] for i in ids) == records["ecoli_k12"][100:160]
    second_file = cache.caches[1].folder / "contig000000.u8"
    stamp = second_file.stat().st_mtime_ns

    # the first file changes: its cache is rebuilt (the new sequence is read), the second file's is kept
    text = first.read_text().replace(records["ecoli_k12"][:60], "N" * 60, 1)
    first.write_text(text)
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10**9))
    Path(str(first) + ".fai").unlink(missing_ok=True)
    again = open_tokens([first, second], cache_dir=tmp_path / "c", contigs=picked)
    ids, _ = again.tokens("ecoli_k12", 0, 60)
    assert "".join("ACGTN"[i] for i in ids) == "N" * 60
    assert second_file.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.packed("NC_000932.1"), cache.packed("NC_000932.1"))


def test_one_file_in_a_list_is_a_plain_token_cache(tmp_path):
    cache = open_tokens([str(MULTI)], cache_dir=tmp_path)
    assert isinstance(cache, TokenCache) and cache.contig_names == ["chr20", "ecoli_k12", "saureus_n315"]


def test_a_contig_in_two_files_is_an_error_naming_both(tmp_path):
    with pytest.raises(GenossmError) as err:
        open_tokens([MULTI, DATA / "multi_contig.bgzip.fa.gz"], cache_dir=tmp_path)
    msg = str(err.value)
    assert "multi_contig.fa" in msg and "multi_contig.bgzip.fa.gz" in msg and "'chr20'" in msg
    # chr20 and 20 are one contig by the alias table
    with pytest.raises(GenossmError, match=r"'chr20' and '20'.*alias") as err:
        GenomeDataModule([MULTI, BGZIP], cache_dir=tmp_path).setup()
    assert "multi_contig.fa" in str(err.value) and "human_chr20_slice.fa.gz" in str(err.value)


def test_a_missing_or_broken_second_file_is_named(tmp_path):
    missing = tmp_path / "absent.fa.gz"
    with pytest.raises(GenossmError, match=r"absent\.fa\.gz: FASTA file not found"):
        open_tokens([PLAIN, missing], cache_dir=tmp_path)
    broken = tmp_path / "broken.fa"
    broken.write_text("ACGTACGT\n")
    with pytest.raises(GenossmError, match=r"broken\.fa: not a FASTA file: line 1"):
        GenomeDataModule([PLAIN, broken], cache_dir=tmp_path / "c").setup()
    truncated = tmp_path / "cut.fa.gz"
    truncated.write_bytes(BGZIP.read_bytes()[:-28])  # without the BGZF end-of-file block
    with pytest.raises(GenossmError, match=r"cut\.fa\.gz: truncated bgzip"):
        open_tokens([PLAIN, truncated], cache_dir=tmp_path / "c")
    with pytest.raises(GenossmError, match="listed twice"):
        open_tokens([PLAIN, PLAIN], cache_dir=tmp_path / "c")
    with pytest.raises(GenossmError, match="names no file"):
        GenomeDataModule([])


def test_inspect_lists_the_contigs_of_every_file(tmp_path, capsys):
    from hydra import compose, initialize_config_dir

    from genossm.cli import load_workflow
    from genossm.paths import conf_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="inspect", overrides=[f"cache_dir={tmp_path}", f"fasta=[{PLAIN},{BGZIP}]"])
    rows = load_workflow("inspect").inspect(cfg)
    assert [(r["contig"], r["length"]) for r in rows] == [("NC_000932.1", 154_478), ("20", 200_000)]
    out = capsys.readouterr().out
    assert "athaliana_chloroplast.fa + " in out and "all 2" in out


def test_a_process_waits_while_another_builds_the_cache(tmp_path):
    """DDP ranks open the same genome at once: the cache folder is locked while one of them builds."""
    import threading

    from genossm.data.token_cache import _cache_lock

    results = []
    with _cache_lock(PLAIN, tmp_path):
        opener = threading.Thread(target=lambda: results.append(open_tokens([PLAIN, BGZIP], cache_dir=tmp_path)))
        opener.start()
        opener.join(timeout=0.5)
        assert opener.is_alive() and not results  # blocked on the first file's lock
    opener.join(timeout=60)
    assert results and results[0].contig_names == ["NC_000932.1", "20"]
