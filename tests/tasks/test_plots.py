"""What the plots say: ROC/PR legends carry the metrics table's numbers and the title the number of regions;
training curves are labelled so that train and validation bits per base cannot be mistaken for each other."""

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from genossm.tasks.metrics import compute_metrics  # noqa: E402
from genossm.tasks.plots import plot_curves, plot_history  # noqa: E402


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions draw (kept open so their texts can be read)."""
    kept = []
    monkeypatch.setattr(plt, "close", lambda fig=None: kept.append(fig))
    yield kept
    monkeypatch.undo()
    plt.close("all")


def texts(fig):
    ax = fig.axes[0]
    return ax.get_title(), [t.get_text() for t in ax.get_legend().get_texts()]


def test_multiclass_legend_uses_the_table_values_and_says_n(tmp_path, figures):
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0, 1, 2] * 10)
    scores = {"fine-tuned": torch.softmax(torch.randn(30, 3, generator=g), -1)}
    m = {"fine-tuned": compute_metrics("multiclass", scores["fine-tuned"], y, 3)}
    written = plot_curves("multiclass", y, scores, tmp_path, title="t", metrics=m)
    assert [p.name for p in written] == ["roc.png", "pr.png"] and all(p.stat().st_size > 1000 for p in written)
    title, legend = texts(figures[0])
    assert "n = 30 regions" in title and "macro" in title
    assert legend == [f"fine-tuned (AUROC {m['fine-tuned']['auroc']:.3f})"]
    # a class absent from the split: the table has no AUROC, and neither does the legend
    y2 = torch.tensor([0, 1] * 15)
    m2 = {"fine-tuned": compute_metrics("multiclass", scores["fine-tuned"], y2, 3)}
    assert m2["fine-tuned"]["auroc"] is None
    plot_curves("multiclass", y2, scores, tmp_path, metrics=m2)
    assert texts(figures[2])[1] == ["fine-tuned (AUROC -)"]


def test_binary_title_counts_positives(tmp_path, figures):
    y = torch.tensor([0, 0, 1, 1, 1])
    s = {"probe": torch.tensor([0.1, 0.6, 0.4, 0.8, 0.9])}
    plot_curves("binary", y, s, tmp_path, title="val split", metrics={"probe": compute_metrics("binary", s["probe"], y)})
    title, legend = texts(figures[0])
    assert "n = 5 regions, 3 positive" in title and legend[0].startswith("probe (AUROC 0.833")


@pytest.mark.parametrize("causal", [False, True])
def test_training_curve_labels(tmp_path, figures, causal):
    history = SimpleNamespace(train=[(10, 1.3, 1.9), (20, 1.2, 1.8)], val=[(20, 1.35, 1.95)])
    base = {"composition_entropy": 1.99, "best_markov": 1.93, "best_order": 5}
    path = plot_history(history, tmp_path / "c.png", base, causal=causal)
    assert path.stat().st_size > 1000
    fig = figures[0]
    loss_ax, bpb_ax = fig.axes
    labels = [t.get_text() for t in bpb_ax.get_legend().get_texts()]
    if causal:
        assert loss_ax.get_title() == "next-base loss (causal LM)"
        assert labels[:2] == ["train (next base)", "validation (next base)"]
    else:
        assert loss_ax.get_title() == "masked-LM loss"
        assert "reads low" in labels[0] and "every chosen base masked" in labels[1]
    assert "best Markov, k=5 (validation)" in labels
    # the legend sits below the panel, outside the curves
    assert bpb_ax.get_legend().get_bbox_to_anchor().y1 < bpb_ax.get_window_extent().y0 + 1



def test_variant_evaluation_plots(tmp_path, figures):
    """The legend carries each predictor's AUPRC and interval from the metrics table ("-" without one); the
    area under each drawn precision-recall step curve is that AUPRC."""
    from genossm.tasks.plots import plot_variant_evaluation
    from genossm.tasks.variant_metrics import average_precision

    rng = np.random.default_rng(0)
    y = (rng.random(40) < 0.3).astype(float)
    preds = {"-genossm_llr": np.round(rng.normal(size=40) + y, 1), "indel_length": rng.integers(1, 5, 40).astype(float)}
    metrics = {"-genossm_llr": {"auprc": {"value": 0.5, "low": 0.3, "high": 0.7}}}
    pr = plot_variant_evaluation("binary", y, preds, metrics, tmp_path / "pr.png", title="t")
    title, legend = texts(figures[0])
    assert "n = 40 variants, " in title
    assert legend == ["-genossm_llr (AUPRC 0.500 [0.300, 0.700])", "indel_length (AUPRC -)", f"random ({y.mean():.3f})"]
    for line, score in zip(figures[0].axes[0].get_lines(), preds.values()):
        recall, precision = line.get_xdata(), line.get_ydata()
        assert np.sum(np.diff(recall) * precision[1:]) == pytest.approx(average_precision(y, score))
    scatter = plot_variant_evaluation("regression", rng.normal(size=40), preds, {}, tmp_path / "scatter.png")
    assert pr.read_bytes()[:4] == scatter.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pr.png", "scatter.png"]  # no temporary file left
