"""The variant scorer's own rules: the default window, and how many tokens one model call takes on a CPU."""

from genossm.tasks import variants as task
from genossm.tasks.variants import default_window_len

W = 32  # the window the scoring models were trained with


def test_default_window_len(scoring_models):
    assert default_window_len(scoring_models["rc"]) == W
    assert default_window_len(None) == 2048


def test_cpu_tokens_per_forward():
    assert task.cpu_tokens_per_forward(64) == 8192 and task.cpu_tokens_per_forward(1 << 20) == 256
