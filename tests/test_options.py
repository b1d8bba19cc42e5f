"""Typed option groups (genossm/options.py): sizes checked and named by their config path, nested groups, the
groups of every workflow declaring (and documenting) every key of its config."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from dataclasses import dataclass

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from genossm.config import instantiate
from genossm.errors import GenossmError
from genossm.options import OptionError, Options, RunOptions, group, size, whole
from genossm.paths import conf_dir
from genossm.workflows import load_workflow


@pytest.mark.parametrize("value, kwargs, expected", [
    (12, {}, 12), ("12", {}, 12), (12.0, {}, 12), (0, {"minimum": 0}, 0), (None, {"null": True}, None),
    ("auto", {"auto": True}, "auto"), ("-3", {"minimum": -5}, -3),
])
def test_whole_accepts_whole_numbers_and_what_the_option_allows(value, kwargs, expected):
    assert whole(value, "k", **kwargs) == expected


@pytest.mark.parametrize("value, kwargs, message", [
    (0, {}, "k=0: expected a whole number >= 1"),
    (1.5, {}, "k=1.5: expected a whole number >= 1"),
    (True, {}, "k=True: expected a whole number >= 1"),  # a bool is not a size
    ("abc", {"null": True}, "k='abc': expected a whole number >= 1 (or null)"),
    (None, {}, "k=None: expected a whole number >= 1"),
    ("longest", {"null": True, "auto": True}, "k='longest': expected a whole number >= 1 (or null), or auto"),
    (-1, {"minimum": 0}, "k=-1: expected a whole number >= 0"),
])
def test_whole_refuses_anything_else_with_one_line(value, kwargs, message):
    with pytest.raises(OptionError) as err:
        whole(value, "k", **kwargs)
    assert str(err.value) == message


@dataclass
class Inner(Options):
    depth: int = size(2, minimum=0)
    """How deep."""


@dataclass
class Outer(RunOptions):
    batch_size: int = size(8)
    """Items per batch."""
    name: str | None = None
    """A name."""
    inner: Inner = group(Inner)
    """A nested group."""


def test_from_config_reads_values_and_nested_groups():
    node = OmegaConf.create({"batch_size": "16", "name": "x", "inner": {"depth": 0}, "trainer": {"devices": 1},
                             "seed": 3})
    opts = Outer.from_config(node)
    assert (opts.batch_size, opts.name, opts.inner.depth, opts.seed) == (16, "x", 0, 3)
    assert Outer().inner.depth == 2 and Outer(inner={"depth": 5}).inner.depth == 5


def test_a_bad_value_is_named_by_its_path_or_the_users_spelling():
    with pytest.raises(GenossmError, match=r"^inner\.depth=-1: expected a whole number >= 0$"):
        Outer.from_config(OmegaConf.create({"inner": {"depth": -1}}))
    with pytest.raises(GenossmError, match=r"^data\.batch_size=0: expected a whole number >= 1$"):
        Outer.from_config(OmegaConf.create({"batch_size": 0}), key="data")
    with pytest.raises(GenossmError, match=r"^old_size=0: expected"):
        Outer.from_config(OmegaConf.create({"batch_size": 0}), spelled={"batch_size": "old_size"})
    with pytest.raises(GenossmError, match=r"^inner\.depth=-1"):  # made from Python: the field's own path
        Outer(inner={"depth": -1})


def test_a_mandatory_key_left_unset_keeps_the_default():
    opts = Outer.from_config(OmegaConf.create({"name": "???", "batch_size": 4}))
    assert opts.name is None and opts.batch_size == 4


def test_instantiate_names_a_targets_bad_argument_by_its_node(tmp_path):
    cfg = OmegaConf.create({"data": {"_target_": "genossm.data.datamodule.GenomeDataModule",
                                     "fasta": str(tmp_path / "g.fa"), "batch_size": 0},
                            "callbacks": {"history": {"_target_": "genossm.tasks.callbacks.MetricHistory",
                                                      "every_n_steps": -2}}})
    with pytest.raises(GenossmError, match=r"^data\.batch_size=0: expected a whole number >= 1$"):
        instantiate(cfg.data)
    with pytest.raises(GenossmError, match=r"^callbacks\.history\.every_n_steps=-2: expected a whole number >= 1$"):
        instantiate(cfg.callbacks.history)


# every workflow's option group: the workflow's root config keys, each field documented
GROUPS = {"score-variants": "ScoreVariantsOptions", "evaluate": "EvaluateOptions", "embed": "EmbedOptions",
          "score-regions": "ScoreRegionsOptions", "inspect": "InspectOptions", "finetune": "FinetuneOptions",
          "evaluate-variants": "EvaluateVariantsOptions", "pretrain": "PretrainOptions"}
# keys of a root config that are not the run's options: the trainer group, old spellings (moved to their new
# keys on the way in) and pretrain's groups built from their own nodes (fasta belongs to its data group)
BUILT_FROM_THEIR_NODES = {"pretrain": {"data", "model", "task", "callbacks", "logger", "fasta"}}


@pytest.mark.parametrize("workflow", sorted(GROUPS))
def test_each_workflow_group_declares_its_config_keys(workflow):
    module = load_workflow(workflow)
    kind = getattr(module, GROUPS[workflow])
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name=workflow.replace("-", "_"))
    old = {key.split(".")[0] for key in getattr(module, "RENAMED", {}) if "." not in key}
    keys = {str(k) for k in cfg.keys()} - {"trainer"} - old - BUILT_FROM_THEIR_NODES.get(workflow, set())
    fields = {f.name for f in dataclasses.fields(kind)}
    assert keys <= fields, f"{workflow}: keys without a field: {sorted(keys - fields)}"
    assert fields - keys <= {"precision"}, f"{workflow}: fields without a key: {sorted(fields - keys)}"
    assert isinstance(kind.from_config(cfg), kind)  # the defaults are valid


def _undocumented(kind: type) -> list[str]:
    """Fields of a dataclass without a docstring right under them."""
    missing = []
    for cls in kind.__mro__:
        if not dataclasses.is_dataclass(cls) or cls is Options:
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
        for i, node in enumerate(body):
            if isinstance(node, ast.AnnAssign):
                after = body[i + 1] if i + 1 < len(body) else None
                if not (isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                        and isinstance(after.value.value, str)):
                    missing.append(f"{cls.__name__}.{node.target.id}")
    return missing


@pytest.mark.parametrize("workflow", sorted(GROUPS))
def test_every_option_has_a_docstring(workflow):
    from genossm.options import BaselineOptions, KmerOptions

    module = load_workflow(workflow)
    kinds = [getattr(module, GROUPS[workflow]), BaselineOptions, KmerOptions]
    kinds += [getattr(module, name) for name in ("SplitOptions", "TrainOptions") if hasattr(module, name)]
    missing = [name for kind in kinds for name in _undocumented(kind)]
    assert not missing, f"options without a docstring: {missing}"


def test_score_variants_keywords_are_its_options():
    module = load_workflow("score-variants")
    keywords = set(inspect.signature(inspect.unwrap(module.score_variants)).parameters)
    assert module.OPTION_NAMES <= keywords, sorted(module.OPTION_NAMES - keywords)
    assert keywords - module.OPTION_NAMES == {"trainer", "model"}
