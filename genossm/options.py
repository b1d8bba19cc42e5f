"""Typed option groups: a workflow's options as a dataclass, each field documented, checked when it is made.

A group is a dataclass deriving :class:`Options`. Its fields are the keys of one config node, each with a
docstring under it; a size-like field is declared with :func:`size` (a whole number at or above a minimum,
optionally null or ``auto``) and checked in ``__post_init__``, as every other check a group writes there. A
field whose type is another group is a nested node (``baselines:``, ``train:``)::

    @dataclass
    class Baselines(Options):
        max_order: int = size(8, minimum=0)
        \"\"\"Markov orders 0..max_order are fitted.\"\"\"

    @dataclass
    class EvaluateOptions(RunOptions):
        batch_size: int = size(8)
        \"\"\"Windows per batch.\"\"\"
        baselines: Baselines = group(Baselines)

:meth:`Options.from_config` reads a composed config node into its group; a bad value stops with one message
naming the key as the user wrote it on the command line (``data.batch_size=-2: expected a whole number >= 1``;
a key renamed since is named in the spelling the user gave). Classes that Hydra instantiates from a node
(``data:``, ``callbacks:``) check their own arguments with :func:`whole` and raise :class:`OptionError`;
:func:`genossm.config.instantiate` adds the node's path to the key.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass
from typing import Any, Mapping

from genossm.errors import GenossmError


class OptionError(GenossmError):
    """A bad option value: ``key=value: expected ...``; :meth:`under` names the key by its full config path."""

    def __init__(self, key: str, value: Any, expected: str, *, placed: bool = False):
        self.key, self.value, self.expected, self.placed = key, value, expected, placed
        super().__init__(f"{key}={value!r}: expected {expected}")

    def under(self, prefix: str = "", spelled: Mapping[str, str] | None = None) -> "OptionError":
        """The same error with the key's full path (``prefix`` + key, or its old spelling from ``spelled``);
        an error already placed is returned as it is."""
        if self.placed:
            return self
        full = f"{prefix}.{self.key}" if prefix else self.key
        return OptionError((spelled or {}).get(full, full), self.value, self.expected, placed=True)


def whole(value: Any, key: str, *, minimum: int = 1, null: bool = False, auto: bool = False) -> int | str | None:
    """``value`` as a whole number at or above ``minimum`` (``"12"`` and ``12.0`` are 12), None when ``null``
    allows it, ``"auto"`` when ``auto`` does; anything else raises :class:`OptionError` naming ``key``."""
    if value is None and null:
        return None
    if auto and value == "auto":
        return value
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        number = int(value)
    if number is None or number < minimum:
        expected = f"a whole number >= {minimum}" + (" (or null)" if null else "") + (", or auto" if auto else "")
        raise OptionError(key, value, expected)
    return number


def size(default: Any, *, minimum: int = 1, null: bool = False, auto: bool = False):
    """A dataclass field holding a size (see :func:`whole`), checked when the group is made."""
    return dataclasses.field(default=default, metadata={"whole": dict(minimum=minimum, null=null, auto=auto)})


def group(kind: type, **values):
    """A dataclass field holding a nested group (its defaults, or ``values`` over them)."""
    return dataclasses.field(default_factory=lambda: kind(**values))


@functools.cache
def _hints(owner: type) -> dict:
    """The resolved annotations of a group (evaluated once per class, not per field and instance)."""
    return typing.get_type_hints(owner)


def _group_type(field: dataclasses.Field, owner: type) -> type | None:
    """The :class:`Options` subclass a field holds, if it holds one (the annotation may be a string)."""
    kind = _hints(owner).get(field.name)
    return kind if isinstance(kind, type) and issubclass(kind, Options) else None


@dataclass
class Options:
    """The base of every option group: size fields are checked, nested groups made from plain mappings."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            spec = field.metadata.get("whole")
            if spec is not None:
                setattr(self, field.name, whole(value, field.name, **spec))
                continue
            kind = _group_type(field, type(self))
            if kind is not None and isinstance(value, Mapping):
                try:
                    setattr(self, field.name, kind(**value))
                except OptionError as err:
                    raise err.under(field.name) from None

    @classmethod
    def from_config(cls, node: Any, key: str = "", spelled: Mapping[str, str] | None = None):
        """The group of a config node (a DictConfig or a mapping); keys the group does not declare are left to
        their owners (``trainer``, ``hydra``), a mandatory key left unset (``???``) keeps the field's default
        (the workflow says what it needs). ``key``: the node's path (``data``); ``spelled``: full key -> the
        old spelling the user gave (:func:`genossm.config.renamed_keys`), for naming a bad value."""
        from omegaconf import OmegaConf

        values = {}
        for field in dataclasses.fields(cls):
            if node is None or field.name not in node:
                continue
            if OmegaConf.is_config(node) and OmegaConf.is_missing(node, field.name):
                continue
            value = node[field.name]
            kind = _group_type(field, cls)
            path = f"{key}.{field.name}" if key else field.name
            if kind is not None and value is not None:
                value = kind.from_config(value, path, spelled)
            elif OmegaConf.is_config(value):
                value = OmegaConf.to_container(value, resolve=True)
            values[field.name] = value
        try:
            return cls(**values)
        except OptionError as err:
            raise err.under(key, spelled) from None


@dataclass
class RunOptions(Options):
    """What every workflow's run takes (``conf/run/``)."""

    seed: int = 0
    """Seeds Python, NumPy and torch (and every DataLoader worker) before anything is built."""
    torch_threads: int | str | None = "auto"
    """CPU threads torch computes with: ``auto`` (the cores this process may use, less the DataLoader workers),
    a number, or null (torch's default)."""
    precision: str | None = "auto"
    """The Trainer precision (``32-true``, ``bf16-mixed``, ...); ``auto``: the trainer group's."""


# groups several workflows share (kept here, not beside the code that uses them: a run reads its options and
# says what it does before it imports torch)


@dataclass
class BaselineOptions(Options):
    """The Markov baselines a model's bits per base are compared with (``baselines:`` of pretrain, evaluate
    and evaluate-variants)."""

    enabled: bool = True
    """Fit and report them (pretrain, evaluate)."""
    max_order: int = size(8, minimum=0)
    """Markov orders 0..max_order are fitted (evaluate-variants chooses one of them on the reference)."""
    pseudocount: float = 1.0
    """Added to every count (1: add-one smoothing)."""
    max_train_bases: int = size(200_000_000)
    """At most this many bases are counted."""


@dataclass
class KmerOptions(Options):
    """The k-mer count baseline of a region task (``kmer:`` of finetune)."""

    enabled: bool = True
    """Fit it beside the model."""
    k: int = size(4)
    """The k-mer length."""
    canonical: bool = False
    """Also count each k-mer's reverse complement (strand-symmetric features)."""
