"""Region labels as training targets: which label type a label column is (binary, multiclass or regression),
the class order, and the check that every split holds two classes.

The region files themselves are read by :mod:`genossm.data.regions`, which keeps the labels as raw strings;
what they become is the task's decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from genossm.data.intervals import SPLITS
from genossm.data.regions import RegionSet
from genossm.deprecation import renamed_keywords
from genossm.errors import GenossmError


@dataclass
class Labels:
    """Encoded labels: ``label_type`` binary/multiclass/regression (the ``label_type=`` key), ``y`` float
    (binary, regression) or long (multiclass)."""

    label_type: str
    y: torch.Tensor
    classes: list[str] | None = None

    @property
    def task(self) -> str:
        """The old name of :attr:`label_type` (a saved region model's ``meta["task"]`` keeps it)."""
        return self.label_type

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.label_type == "multiclass" else 1


def _class_sort_key(value: str):
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


@renamed_keywords(task="label_type")
def encode_labels(regions: RegionSet, label_type: str = "auto", classes: Sequence[str] | None = None) -> Labels:
    """Turn the raw label column into targets.

    ``auto``: labels all 0/1 -> binary; other numbers -> regression; text -> binary with two classes,
    else multiclass. ``classes`` (from a saved model) fixes the class order.
    """
    if not regions.has_labels:
        raise GenossmError(f"{regions.source}: no label column")
    fixed_classes = classes is not None  # labels to score with a trained model's classes: no training checks
    raw = [str(v).strip() for v in regions.table["label"]]
    numeric = []
    for value in raw:
        try:
            numeric.append(float(value))
        except ValueError:
            numeric.append(None)
    if label_type == "auto":
        n_numeric = sum(v is not None for v in numeric)
        if n_numeric == len(numeric):
            label_type = "binary" if set(numeric) <= {0.0, 1.0} else "regression"
        elif n_numeric >= len(numeric) / 2:
            i = next(i for i, v in enumerate(numeric) if v is None)
            raise GenossmError(
                f"{regions.where(i)}: label {raw[i]!r} is not a number while {n_numeric} of the {len(raw)} labels are; "
                "fix that line (or set label_type=multiclass if the labels really are class names)"
            )
        else:
            label_type = "binary" if len(set(raw)) == 2 else "multiclass"
    if label_type == "regression":
        for i, v in enumerate(numeric):
            if v is None or not math.isfinite(v):
                raise GenossmError(f"{regions.where(i)}: label {raw[i]!r} is not a number (label_type is regression)")
        return Labels("regression", torch.tensor(numeric, dtype=torch.float32))
    if label_type not in ("binary", "multiclass"):
        raise GenossmError(f"label_type must be auto, binary, multiclass or regression, got {label_type!r}")
    if classes is None:
        if label_type == "binary" and all(v is not None for v in numeric) and set(numeric) <= {0.0, 1.0}:
            classes = ["0", "1"]
            raw = [str(int(v)) for v in numeric]
        else:
            classes = sorted(set(raw), key=_class_sort_key)
    else:
        classes = [str(c) for c in classes]
        if label_type == "binary" and classes == ["0", "1"]:
            raw = [str(int(v)) if v is not None and v in (0.0, 1.0) else r for v, r in zip(numeric, raw)]
    index = {c: k for k, c in enumerate(classes)}
    present = sorted(set(raw), key=_class_sort_key)
    if not fixed_classes and len(present) < 2:
        raise GenossmError(
            f"{regions.source}: every region has the label {present[0]!r}; a classifier needs at least two classes"
        )
    if not fixed_classes and label_type == "multiclass" and len(present) > len(raw) / 2:
        raise GenossmError(
            f"{regions.source}: {len(present)} classes for {len(raw)} regions (more than half as many classes as "
            f"regions): the label column ({regions.label_note or 'label'}) looks like names, not labels; name the "
            "label column with label_column=NAME"
        )
    if label_type == "binary" and len(classes) != 2:
        raise GenossmError(f"{regions.source}: label_type binary needs exactly 2 label values, found {len(classes)}: "
                           f"{classes[:10]}")
    y = np.empty(len(raw), dtype=np.int64)
    for i, value in enumerate(raw):
        if value not in index:
            raise GenossmError(f"{regions.where(i)}: label {value!r} is not one of the classes {classes}")
        y[i] = index[value]
    y_t = torch.from_numpy(y)
    return Labels(label_type, y_t.float() if label_type == "binary" else y_t, list(classes))


def check_split_classes(regions: RegionSet, labels: Labels, splits: np.ndarray) -> None:
    """Every non-empty split of a classification (binary, multiclass) must hold at least two classes: training
    on one class learns nothing, and MCC, AUROC and balanced accuracy are undefined on a split with one class."""
    if labels.label_type == "regression":
        return
    y = labels.y.long().numpy()
    for split in SPLITS:
        rows = np.flatnonzero(splits == split)
        present = sorted({labels.classes[k] for k in y[rows]}, key=_class_sort_key) if len(rows) else []
        if len(rows) and len(present) < 2:
            raise GenossmError(
                f"{regions.source}: the {split} split ({len(rows)} regions) holds only the class {present[0]!r}; "
                "a classifier and its metrics need two classes in every split: change split.by or split.fractions, "
                "or give the file a split column"
            )
