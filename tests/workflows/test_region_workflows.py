"""genossm finetune / score-regions / embed end to end on the shipped task, with a random-weight tiny model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from genossm.models import BiMambaConfig, BiMambaLM, save_pretrained

from helpers import run_cli, save_tiny_model

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("pretrained") / "tiny", rc_equivariant=True, train_window_len=None)


@pytest.fixture(scope="module")
def finetuned(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("finetune") / "run"
    mp = pytest.MonkeyPatch()
    try:
        run_cli(["finetune", f"pretrained={tiny_model}", f"output={out}", "trainer.fast_dev_run=true",
                 "trainer.enable_progress_bar=false", "train.batch_size=16"], mp, out.parent)
    finally:
        mp.undo()
    return out


@pytest.mark.slow
def test_finetune_writes_every_output(finetuned, bundled_data):
    task = pd.read_csv(bundled_data / "chloroplast_promoters.tsv", sep="\t")
    pred = pd.read_csv(finetuned / "predictions.tsv", sep="\t")
    assert pred["name"].tolist() == task["name"].tolist()  # one row per region, input order
    assert pred[["start", "end", "strand", "split"]].equals(task[["start", "end", "strand", "split"]])
    for col in ("score_finetune", "score_probe", "score_kmer"):
        assert pred[col].between(0, 1).all()
    metrics = json.loads((finetuned / "metrics.json").read_text())
    assert set(metrics["methods"]) == {"finetune", "probe", "kmer"}
    assert metrics["split_sizes"] == task["split"].value_counts().to_dict()
    for name in ("finetune", "probe", "kmer"):
        test = metrics["methods"][name]["test"]
        assert {"auroc", "auprc", "mcc", "accuracy"} <= set(test) and 0 <= test["auroc"] <= 1
    for f in ("roc.png", "pr.png", "config.yaml", "model/head.safetensors", "model/config.json", "probe/head.safetensors"):
        assert (finetuned / f).is_file(), f
    # MCC and accuracy use one decision threshold per method, chosen without the test split, saved with the model
    from genossm.models import load_extra
    from genossm.tasks.metrics import decision_threshold

    y, splits = torch.tensor(pred["label"].to_numpy()).float(), pred["split"].to_numpy()
    for name, folder in (("finetune", "model"), ("probe", "probe")):
        by_split = metrics["methods"][name]
        threshold, source = decision_threshold(torch.tensor(pred[f"score_{name}"].to_numpy()).float(), y, splits)
        assert source == "train+val"  # the shipped task's validation split (43 regions) is too small alone
        assert all(m["threshold"] == pytest.approx(threshold, abs=1e-6) for m in by_split.values())
        assert load_extra(finetuned / folder)["region_head"]["threshold"] == pytest.approx(threshold, abs=1e-6)


@pytest.mark.slow
def test_score_regions_matches_finetune_predictions(finetuned, bundled_data, tmp_path, monkeypatch):
    task = pd.read_csv(bundled_data / "chloroplast_promoters.tsv", sep="\t")
    subset = task.iloc[[5, 1, 200, 3]]  # not sorted: output must keep this order
    bed = tmp_path / "new.bed"
    subset[["chrom", "start", "end", "name"]].assign(score=0, strand=subset["strand"]).to_csv(bed, sep="\t", header=False, index=False)
    run_cli(["score-regions", f"pretrained={finetuned / 'model'}", f"regions={bed}", "output=scores.tsv"], monkeypatch, tmp_path)
    scores = pd.read_csv(tmp_path / "scores.tsv", sep="\t")
    assert scores["name"].tolist() == subset["name"].tolist()
    pred = pd.read_csv(finetuned / "predictions.tsv", sep="\t").set_index("name")
    np.testing.assert_allclose(scores["score"], pred.loc[subset["name"], "score_finetune"], rtol=1e-4, atol=1e-5)
    from genossm.models import load_extra

    threshold = load_extra(finetuned / "model")["region_head"]["threshold"]
    assert scores["pred"].tolist() == [1 if s > threshold else 0 for s in scores["score"]]  # the class called
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.bed", "scores.tsv"]  # atomic: no temp left


@pytest.mark.slow
def test_embed_npy_and_parquet_in_input_order(tiny_model, tmp_path, monkeypatch):
    fa = tmp_path / "seqs.fa"
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGT"), n)) for n in (50, 20, 50, 35)]
    fa.write_text("".join(f">s{i}\n{s}\n" for i, s in enumerate(seqs)))
    run_cli(["embed", f"pretrained={tiny_model}", f"regions={fa}", "output=e.npy"], monkeypatch, tmp_path)
    run_cli(["embed", f"pretrained={tiny_model}", f"regions={fa}", "output=e.parquet"], monkeypatch, tmp_path)
    emb = np.load(tmp_path / "e.npy")
    table = pd.read_parquet(tmp_path / "e.parquet")
    assert emb.shape == (4, 16) and table["name"].tolist() == ["s0", "s1", "s2", "s3"]
    np.testing.assert_allclose(table[[f"emb_{i}" for i in range(16)]].to_numpy(), emb)
    # RC-invariant: the reverse complement of record 1 embeds the same
    from Bio.Seq import reverse_complement

    fa2 = tmp_path / "rc.fa"
    fa2.write_text(f">rc\n{reverse_complement(seqs[1])}\n")
    run_cli(["embed", f"pretrained={tiny_model}", f"regions={fa2}", "output=rc.npy"], monkeypatch, tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / "rc.npy")[0], emb[1], rtol=1e-4, atol=1e-5)


def short_regions(path, n=80, length=81):
    """A headerless BED of ``n`` non-overlapping ``length``-bp regions of the bundled genome, labels 1, 0, 1, ..."""
    path.write_text("".join(f"NC_000932.1\t{1500 * i}\t{1500 * i + length}\t{(i + 1) % 2}\n" for i in range(n)))
    return path


@pytest.mark.parametrize("override, expected", [(None, 88), ("region_len=200", 200), ("region_len=null", 81)])
def test_finetune_region_len_follows_the_regions_unless_given(tiny_model, tmp_path, monkeypatch, override, expected):
    """Without region_len, 81-bp regions are padded to 88 (the longest, rounded up to a multiple of 8), not to
    200; a given region_len is used as it is. The model records the length, and score-regions uses it."""
    from genossm.models import load_extra

    bed = short_regions(tmp_path / "short.bed")
    out = tmp_path / "run"
    run_cli(["finetune", f"pretrained={tiny_model}", f"regions={bed}", f"output={out}", "trainer.fast_dev_run=true",
             "trainer.enable_progress_bar=false", "train.batch_size=16", "probe=false", "kmer.enabled=false"]
            + ([override] if override else []), monkeypatch, tmp_path)
    assert json.loads((out / "metrics.json").read_text())["region_len"] == expected
    assert load_extra(out / "model")["region_head"]["region_len"] == expected
    run_cli(["score-regions", f"pretrained={out / 'model'}", f"regions={bed}", "output=scores.tsv"], monkeypatch, tmp_path)
    scores = pd.read_csv(tmp_path / "scores.tsv", sep="\t")
    pred = pd.read_csv(out / "predictions.tsv", sep="\t")
    np.testing.assert_allclose(scores["score"], pred["score_finetune"], rtol=1e-4, atol=1e-5)


def test_finetune_region_len_auto_stops_at_the_models_training_window(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = BiMambaLM(BiMambaConfig(d_model=8, n_layers=1, d_state=4, d_conv=4, expand=2))
    windowed = save_pretrained(model, tmp_path / "windowed", extra={"train_window_len": 64})
    out = tmp_path / "run"
    run_cli(["finetune", f"pretrained={windowed}", f"regions={short_regions(tmp_path / 'short.bed')}", f"output={out}",
             "method=probe", "kmer.enabled=false"], monkeypatch, tmp_path)
    assert json.loads((out / "metrics.json").read_text())["region_len"] == 64


def test_embed_region_len_auto_pads_to_the_longest_rounded_up():
    from genossm.cli import load_workflow

    sequence_loader = load_workflow("embed").sequence_loader

    seqs = [np.zeros(n, dtype=np.uint8) for n in (81, 30, 50)]
    batch = next(iter(sequence_loader(seqs, 8, "auto")))
    assert batch["tokens"].shape == (3, 88)


def test_bad_regions_give_one_clean_error(tiny_model, tmp_path, monkeypatch, capsys):
    bed = tmp_path / "bad.bed"
    bed.write_text("NC_000932.1\t100\t300\t1\nNC_000932.1\t500\t400\t0\n")
    with pytest.raises(SystemExit) as exc:
        run_cli(["finetune", f"pretrained={tiny_model}", f"regions={bed}", f"output={tmp_path / 'run'}"], monkeypatch, tmp_path)
    assert exc.value.code == 2
    assert "bad.bed line 2: end 400 < start 500" in capsys.readouterr().err


@pytest.mark.slow
def test_embed_pooling_cls_still_pools_position_0_with_a_warning(tiny_model, tmp_path, monkeypatch):
    """pooling=cls is no longer a documented choice but still runs for one release: position 0 of each centred
    window (here a <pad> position), both strands averaged, as before, and a FutureWarning that says so."""
    from genossm.data.regions import center_fit
    from genossm.data.tokenizer import encode, reverse_complement
    from genossm.models import from_pretrained

    fa = tmp_path / "seqs.fa"
    rng = np.random.default_rng(1)
    seqs = ["".join(rng.choice(list("ACGT"), 40)) for _ in range(3)]
    fa.write_text("".join(f">s{i}\n{s}\n" for i, s in enumerate(seqs)))
    with pytest.warns(FutureWarning, match="pooling=cls is deprecated.*first position.*<pad>"):
        run_cli(["embed", f"pretrained={tiny_model}", f"regions={fa}", "pooling=cls", "region_len=60", "output=e.npy"],
                monkeypatch, tmp_path)
    model = from_pretrained(tiny_model).eval()
    tokens = torch.from_numpy(np.stack([center_fit(encode(s), 60)[0] for s in seqs]).astype(np.int64))
    with torch.no_grad():
        first = model.embed(tokens, pooling=None)[:, 0]
        first_rc = model.embed(reverse_complement(tokens), pooling=None)[:, 0]
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), (0.5 * (first + first_rc)).numpy(), rtol=1e-4, atol=1e-5)
