"""Region labels as training targets (genossm/tasks/region_labels.py): label sets no classifier can learn
from are refused with a message naming the file and line, the label_type key and its old name."""

from __future__ import annotations

import pytest

from genossm.data.intervals import assign_splits
from genossm.data.regions import read_regions
from genossm.errors import GenossmError
from genossm.tasks.region_labels import check_split_classes, encode_labels


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _bed(tmp_path, labels, name="l.bed"):
    return write(tmp_path / name, [f"1\t{10 * i}\t{10 * i + 8}\t{lab}" for i, lab in enumerate(labels)])


def test_single_class_label_set_is_refused(tmp_path):
    with pytest.raises(GenossmError, match=r"l\.bed: every region has the label '1'; a classifier needs at least two"):
        encode_labels(read_regions(_bed(tmp_path, ["1"] * 10), need_labels=True))


def test_one_text_label_among_numbers_names_its_line(tmp_path):
    labels = ["0", "1"] * 5
    labels[6] = "yes"
    with pytest.raises(GenossmError, match=r"l\.bed line 7: label 'yes' is not a number while 9 of the 10 labels are"):
        encode_labels(read_regions(_bed(tmp_path, labels), need_labels=True))


def test_more_classes_than_half_the_regions_is_refused(tmp_path):
    tsv = write(tmp_path / "m.tsv", ["chrom\tstart\tend\tlabel"] + [f"1\t{i}\t{i + 5}\tc{i % 7}" for i in range(10)])
    with pytest.raises(GenossmError, match=r"m\.tsv: 7 classes for 10 regions"):
        encode_labels(read_regions(tsv, need_labels=True))


def test_a_split_with_one_class_is_refused(tmp_path):
    tsv = write(tmp_path / "s.tsv", ["chrom\tstart\tend\tlabel\tsplit"]
                + [f"1\t{10 * i}\t{10 * i + 5}\t{i % 2}\ttrain" for i in range(6)]
                + [f"1\t{100 + 10 * i}\t{105 + 10 * i}\t1\tval" for i in range(3)])
    regions = read_regions(tsv, need_labels=True)
    labels = encode_labels(regions)
    with pytest.raises(GenossmError, match=r"s\.tsv: the val split \(3 regions\) holds only the class '1'"):
        check_split_classes(regions, labels, assign_splits(regions))


def test_encode_labels_takes_the_label_type_key_and_its_old_name(tmp_path):
    regions = read_regions(write(tmp_path / "r.tsv", ["chrom\tstart\tend\tlabel", "1\t0\t10\t0.5", "1\t0\t10\t2"]),
                           need_labels=True)
    labels = encode_labels(regions, label_type="regression")
    assert labels.label_type == labels.task == "regression" and labels.y.tolist() == [0.5, 2.0]
    with pytest.warns(DeprecationWarning, match=r"encode_labels\(task=\) is now label_type="):
        assert encode_labels(regions, task="regression").label_type == "regression"
    names = read_regions(write(tmp_path / "n.tsv", ["chrom\tstart\tend\tlabel", "1\t0\t10\t1", "1\t0\t10\t2",
                                                    "1\t0\t10\tx"]), need_labels=True)
    with pytest.raises(GenossmError, match=r"set label_type=multiclass if the labels really are class names"):
        encode_labels(names)
