"""The resumable CSV logger: earlier rows before the resumed step come back; an unreadable file is kept aside."""

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
    with caplog.at_level(logging.WARNING, logger="genossm.loggers"):
        logger = ResumableCSVLogger(tmp_path, name="logs", version="")
    assert logger.keep_rows_before(100) == 0
    assert (log_dir / "metrics.unreadable.csv").read_bytes() == b"\xff\xfe\x00garbage"
    assert "metrics.csv: not a readable CSV" in caplog.text
