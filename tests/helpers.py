"""What many test files need: a tiny random-weight model, a run of the genossm command in a clean folder, a
composed workflow config. Imported as ``helpers`` (tests/ is on sys.path through tests/conftest.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"


def tiny_lm(seed: int = 0, **config):
    """A random-weight BiMambaLM of one small layer (``config`` overrides the BiMambaConfig fields)."""
    from genossm.models import BiMambaConfig, BiMambaLM

    torch.manual_seed(seed)
    return BiMambaLM(BiMambaConfig(**{"d_model": 16, "n_layers": 1, "d_state": 4, "d_conv": 4, "expand": 2, **config}))


def save_tiny_model(folder, train_window_len: int | None = 32, model=None, **config) -> Path:
    """``tiny_lm(**config)`` (or ``model``) saved as a pretrained folder; ``train_window_len`` goes into its extra."""
    from genossm.models import save_pretrained

    model = tiny_lm(**config) if model is None else model
    extra = None if train_window_len is None else {"train_window_len": train_window_len}
    return save_pretrained(model, folder, extra=extra)


def run_cli(argv, monkeypatch, cwd) -> None:
    """``genossm ARGV`` in-process, from ``cwd``, on one thread, with sys.argv restored afterwards."""
    from genossm import cli

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cli.main(argv)


def compose_config(name: str, overrides=()):
    """The workflow ``name``'s root config composed with ``overrides``, as on the command line."""
    from hydra import compose, initialize_config_dir

    from genossm.paths import conf_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def compose_pretrain(overrides):
    return compose_config("pretrain", overrides)


def save_scoring_models(root, train_window_len: int = 32) -> dict[str, Path]:
    """Three two-layer models of the ``tiny`` size saved under ``root``, by name: ``rc`` (RC-equivariant),
    ``plain`` (not), ``causal`` (one direction only)."""
    from genossm.config import model_config
    from genossm.models import BiMambaConfig, BiMambaLM, save_pretrained

    def tiny(**overrides):
        cfg = model_config("tiny")
        cfg.update(d_model=16, n_layers=2, **overrides)
        torch.manual_seed(0)
        return BiMambaLM(BiMambaConfig(**cfg)).eval()

    root = Path(root)
    out = {}
    for name, kw in {"rc": {}, "plain": {"rc_equivariant": False},
                     "causal": {"rc_equivariant": False, "bidirectional": False}}.items():
        save_pretrained(tiny(**kw), root / name, extra={"train_window_len": train_window_len})
        out[name] = root / name
    return out
