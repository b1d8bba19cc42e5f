"""The resumable CSV logger: earlier rows before the resumed step come back; the file is never deleted or cut
short before the run has rows of its own; an unreadable file is kept aside."""

import csv
import logging

from genossm.tasks.loggers import ResumableCSVLogger


def test_rows_before_the_resumed_step_are_kept_as_written(tmp_path):
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    (log_dir / "metrics.csv").write_text("epoch,step,train/loss\n0,9,1.25\n0,19,1.125\n0,29,1.0\n")
    logger = ResumableCSVLogger(tmp_path, name="logs", version="")
    assert logger.keep_rows_before(20) == 2
    logger.log_metrics({"train/loss": 0.5, "epoch": 0}, step=29)
    logger.save()
    rows = list(csv.DictReader(open(log_dir / "metrics.csv")))
    assert [(r["step"], r["train/loss"]) for r in rows] == [("9", "1.25"), ("19", "1.125"), ("29", "0.5")]


def test_an_unreadable_metrics_file_is_moved_aside(tmp_path, caplog):
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    (log_dir / "metrics.csv").write_bytes(b"\xff\xfe\x00garbage")
    (log_dir / "metrics.unreadable.csv").write_text("kept from before\n")
    with caplog.at_level(logging.WARNING, logger="genossm.loggers"):
        logger = ResumableCSVLogger(tmp_path, name="logs", version="")
        assert logger.keep_rows_before(100) == 0
        assert (log_dir / "metrics.csv").read_bytes() == b"\xff\xfe\x00garbage"  # until the run writes rows
        logger.log_metrics({"train/loss": 0.5}, step=0)
        logger.save()
    assert (log_dir / "metrics.unreadable.1.csv").read_bytes() == b"\xff\xfe\x00garbage"
    assert (log_dir / "metrics.unreadable.csv").read_text() == "kept from before\n"
    assert "metrics.csv: not a readable metrics CSV" in caplog.text
    assert [r["step"] for r in csv.DictReader(open(log_dir / "metrics.csv"))] == ["0"]


def test_a_run_that_writes_no_rows_leaves_the_file_as_it_was(tmp_path):
    """A resume that fails or is stopped before its first step: Lightning's logger deleted the file on start."""
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    text = "epoch,step,train/loss\n0,9,1.25\n0,19,1.125\n0,29,1.0\n"
    (log_dir / "metrics.csv").write_text(text)
    logger = ResumableCSVLogger(tmp_path, name="logs", version="")
    logger.log_hyperparams({"lr": 0.1})
    assert logger.keep_rows_before(20) == 2
    logger.save()  # nothing logged yet
    logger.finalize("failed")
    assert (log_dir / "metrics.csv").read_text() == text
    assert "lr: 0.1" in (log_dir / "hparams.yaml").read_text()


def test_rows_with_missing_cells_are_read(tmp_path):
    """A last line cut short (a file written by another tool or version) does not stop the resume."""
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    (log_dir / "metrics.csv").write_text("epoch,step,train/loss\n0,9,1.25\n0,19\n0\n")
    logger = ResumableCSVLogger(tmp_path, name="logs", version="")
    assert logger.keep_rows_before(100) == 2
    logger.log_metrics({"train/loss": 0.5}, step=100)
    logger.save()
    rows = list(csv.DictReader(open(log_dir / "metrics.csv")))
    assert [r["step"] for r in rows] == ["9", "19", "100"]
