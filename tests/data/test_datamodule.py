"""GenomeDataModule: every conf/data config composes and serves batches; Lightning epochs reseed; warm-up."""

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from genossm.data import tokenizer as tk
from genossm.data.datamodule import GenomeDataModule
from genossm.errors import GenossmError
from genossm.paths import conf_dir

DATA = Path(__file__).resolve().parents[2] / "data"
CONFIGS = ["demo", "ecoli", "human_chr20", "custom"]


def compose_data(name, *overrides):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(overrides=[f"+data={name}", *overrides])


@pytest.mark.parametrize("name", CONFIGS)
def test_every_data_config_instantiates_and_serves_batches(name, tmp_path):
    overrides = [f"data.cache_dir={tmp_path}", "data.num_workers=0", "data.window_len=2048", "data.batch_size=2"]
    if name != "demo":
        overrides.append(f"fasta={DATA / 'multi_contig.fa'}")
    cfg = compose_data(name, *overrides)
    dm = instantiate(cfg.data)
    assert isinstance(dm, GenomeDataModule)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) >= {"tokens", "softmask", "valid", "contig", "start"}
    assert batch["tokens"].shape == batch["softmask"].shape == batch["valid"].shape == (2, 2048)
    assert batch["tokens"].dtype == torch.long and batch["valid"].dtype == torch.bool
    assert batch["start"].shape == (2,) and len(batch["contig"]) == 2
    for split in ("train", "val", "test"):
        assert dm.intervals(split), f"{name}: empty {split} split"
    val = next(iter(dm.val_dataloader()))
    assert val["tokens"].shape[1] == 2048 and not val["rc"].any()


def test_fasta_override_reaches_the_data_module():
    cfg = compose_data("custom", f"fasta={DATA / 'multi_contig.fa'}")
    assert cfg.data.fasta == str(DATA / "multi_contig.fa")
    assert compose_data("demo").data.fasta == str(DATA / "athaliana_chloroplast.fa")


def test_intervals_and_cache_give_the_split_bases(tmp_path):
    dm = GenomeDataModule(DATA / "multi_contig.fa", window_len=1000, batch_size=4, val_contigs=["chr20"],
                          test_contigs=["saureus_n315"], cache_dir=tmp_path)
    assert dm.intervals("val") == [("chr20", 0, 40_000)] and dm.intervals("train") == [("ecoli_k12", 0, 40_000)]
    ids, _ = dm.cache.tokens(*dm.intervals("train")[0])
    assert len(ids) == 40_000 and tk.decode(ids[:10]) == "AGCTTTTCAT"  # E. coli K-12 MG1655 starts so
    with pytest.raises(GenossmError, match="unknown split"):
        dm.intervals("dev")
    with pytest.raises(GenossmError, match="window_len must be between"):
        GenomeDataModule(DATA / "multi_contig.fa", window_len=2_000_000)
    with pytest.raises(GenossmError, match="no genome given"):
        GenomeDataModule(None)


class Recorder(L.LightningModule):
    def __init__(self, dm):
        super().__init__()
        self.dm = dm
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen = []

    def training_step(self, batch, _):
        self.seen.append((self.current_epoch, batch["tokens"].shape[1], tuple(batch["start"].tolist())))
        return (self.w * batch["tokens"].float().mean()).sum()

    def on_train_epoch_end(self):
        self.dm.set_window_len(self.dm.window_len * 2)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def fit(tmp_path, workers):
    dm = GenomeDataModule(DATA / "athaliana_chloroplast.fa", window_len=512, batch_size=2, num_workers=workers,
                          samples_per_epoch=6, val_fraction=0.1, cache_dir=tmp_path, seed=3)
    model = Recorder(dm)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    return model.seen


@pytest.mark.slow
def test_lightning_epochs_reseed_warm_up_and_repeat(tmp_path):
    seen = fit(tmp_path, workers=0)
    assert [(e, n) for e, n, _ in seen] == [(0, 512)] * 3 + [(1, 1024)] * 3
    assert {s for _, _, s in seen[:3]} != {s for _, _, s in seen[3:]}  # a new draw each epoch
    assert fit(tmp_path, workers=2) == seen  # same batches with worker processes


def _all_n_genome(tmp_path):
    path = tmp_path / "n.fa"
    path.write_text(">a\n" + "N" * 60 + "\n" + "N" * 60 + "\n>b\n" + "n" * 50 + "\n")
    return path


def test_a_split_without_any_base_stops_before_training(tmp_path):
    cfg = compose_data("custom", f"fasta={_all_n_genome(tmp_path)}", f"data.cache_dir={tmp_path}", "data.window_len=32",
                       "data.num_workers=0")
    dm = instantiate(cfg.data)
    with pytest.raises(GenossmError, match=r"n\.fa: the train split \(\d+ bases\) holds no A, C, G or T, only N"):
        dm.setup("fit")


@pytest.mark.slow
def test_a_genome_without_any_base_through_the_command(tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "genossm.cli", "pretrain", "data=custom", f"fasta={_all_n_genome(tmp_path)}",
         f"output={tmp_path / 'run'}", "model=tiny", "trainer=cpu", "data.window_len=32", "data.num_workers=0",
         "trainer.max_steps=2", "trainer.enable_progress_bar=false"],
        capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "holds no A, C, G or T, only N" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "model").exists()
