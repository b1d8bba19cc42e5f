"""Every save format of genossm's models: a folder with ``model.safetensors`` + ``config.json`` (a backbone),
plus ``head.safetensors`` for a fine-tuned region model; and reading a Lightning ``.ckpt``.

``config.json`` holds::

    {"format": "genossm-model", "format_version": 1,
     "model_config": {...BiMambaConfig fields...},
     "tokenizer": {...genossm.vocab.vocab_dict()...},
     "extra": {...whatever the caller passed, e.g. {"train_window_len": 2048}...}}

Loading a folder needs only torch and safetensors (no Lightning, no Hydra). A Lightning ``.ckpt`` written by
pretraining (:class:`genossm.tasks.pretrain.MaskedLM`) carries the model as a block of its own:
``hyper_parameters["model_config"]`` (the config fields), ``hyper_parameters["extra"]`` and the ``state_dict``
entries prefixed ``model.`` (:data:`CHECKPOINT_PREFIX`: the task keeps the backbone as ``self.model``).
:func:`write_checkpoint_block` writes that block (the task's ``on_save_checkpoint``), :func:`read_checkpoint`
reads it, :func:`checkpoint_weights` takes the model's weights out of a
``state_dict``; :func:`from_pretrained` and :func:`load_extra` accept a ``.ckpt`` as they accept a folder.

A fine-tuned region model (``genossm finetune``) is a backbone folder whose ``extra["region_head"]`` holds task,
classes, pooling, region_len, plus ``head.safetensors``: the linear head, ``weight`` (n_outputs, H) and
``bias`` (n_outputs,). :func:`save_region_model` and :func:`load_region_model` write and read it.

Every loader takes ``bundled:NAME`` for a reference model shipped with genossm (``data/models/NAME``;
:func:`bundled_models` lists them), e.g. ``from_pretrained("bundled:bacteria")``, and ``hf:ORG/NAME[@REVISION]``
for a checkpoint on the Hugging Face Hub that genossm can run (Caduceus, PlantCaduceus: ``model_type: caduceus``,
mapped onto genossm's model by :mod:`genossm.models.caduceus`), e.g. ``from_pretrained("hf:kuleshov-group/
PlantCaduceus_l20")``. It is fetched with ``huggingface_hub`` into its usual cache (``HF_HOME``,
``HF_HUB_OFFLINE=1``, the login token); a local folder holding such a checkpoint works as a plain path.
Nothing from a checkpoint is executed: its config is read as JSON and weights with ``weights_only``.

Loading checks every tensor: its name and shape against the config, a floating-point dtype, and finite values.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import pickle
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from genossm.atomic import atomic_path, atomic_write
from genossm.checksums import file_sha256
from genossm.errors import GenossmError
from genossm.models.bimamba import BiMambaConfig, BiMambaLM
from genossm.paths import data_dir
from genossm.vocab import check_vocab, vocab_dict

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "genossm-model"
FORMAT_VERSION = 1
HEAD_FILE = "head.safetensors"
log = logging.getLogger(__name__)
BUNDLED = "bundled:"
HF = "hf:"
# beside the weights of a bundled model: their sha256, checked on every load (a damaged install is named, not run)
CHECKSUM_NAME = WEIGHTS_NAME + ".sha256"
# what hf: fetches from a Hub repository (the first weights file found is used)
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def bundled_models() -> dict[str, Path]:
    """The reference models shipped with genossm: name -> folder (``data/models/<name>``)."""
    root = data_dir() / "models"
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / CONFIG_NAME).is_file()}


def parse_hf(value: str) -> tuple[str, str | None]:
    """``hf:ORG/NAME[@REVISION]`` -> (repository id, revision or None)."""
    spec = value[len(HF):]
    repo, _, revision = spec.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")) or (_ and not revision):
        raise GenossmError(f"{value}: not a Hub model; write hf:ORG/NAME or hf:ORG/NAME@REVISION "
                           "(e.g. hf:kuleshov-group/PlantCaduceus_l20)")
    return repo, revision or None


def resolve_hf(value: str) -> Path:
    """Fetch (or find in the Hugging Face cache) the checkpoint ``hf:ORG/NAME[@REVISION]``; its local folder.

    Only ``config.json``, the weights and the tokenizer files are fetched, one weights file: ``model.safetensors``
    where the repository has one, else ``pytorch_model.bin``."""
    repo, revision = parse_hf(value)
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError,
                                            LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)
    except ImportError:
        raise GenossmError(f"{value}: loading Hub checkpoints needs huggingface_hub: pip install huggingface_hub") from None

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    how_to_fetch = (f"fetch it where the Hub can be reached (huggingface-cli download {repo}"
                    f"{' --revision ' + revision if revision else ''}) and copy the cache folder (HF_HOME) here, or give "
                    "the downloaded folder as a path")

    def fetch(filename: str) -> Path:
        return Path(hf_hub_download(repo, filename, revision=revision))

    try:
        config = fetch(CONFIG_NAME)
        for name in HF_WEIGHTS:
            try:
                fetch(name)
                break
            except EntryNotFoundError as err:  # the Hub's answer, or (LocalEntryNotFoundError) not in the cache
                if name == HF_WEIGHTS[-1]:
                    if isinstance(err, LocalEntryNotFoundError):
                        raise
                    raise GenossmError(f"{value}: the repository has {CONFIG_NAME} but neither "
                                       f"{' nor '.join(HF_WEIGHTS)}") from None
        from genossm.models.caduceus import TOKENIZER_FILES

        for name in TOKENIZER_FILES:
            try:
                fetch(name)
            except EntryNotFoundError:
                pass  # optional: the vocabulary size names the tokenizer
    except RevisionNotFoundError:
        raise GenossmError(f"{value}: revision {revision!r} not found in {repo}") from None
    except GatedRepoError:
        raise GenossmError(f"{value}: {repo} is gated; accept its terms on the Hub and log in "
                           "(huggingface-cli login or HF_TOKEN)") from None
    except RepositoryNotFoundError:
        raise GenossmError(f"{value}: no such repository on the Hub ({repo}), or it is private "
                           "(log in with huggingface-cli login or set HF_TOKEN)") from None
    except LocalEntryNotFoundError:  # before EntryNotFoundError, its base class
        why = "HF_HUB_OFFLINE is set" if offline else "the Hub cannot be reached"
        raise GenossmError(f"{value}: not in the Hugging Face cache and {why}; {how_to_fetch}") from None
    except EntryNotFoundError:
        raise GenossmError(f"{value}: {repo} has no {CONFIG_NAME}; it is not a model genossm can run") from None
    except HfHubHTTPError as err:
        raise GenossmError(f"{value}: the Hub refused the download ({err}); {how_to_fetch}") from None
    except OSError as err:
        raise GenossmError(f"{value}: cannot fetch the checkpoint ({err}); {how_to_fetch}") from None
    return config.parent


def model_path(value: str | os.PathLike) -> Path:
    """A model argument as a path: ``bundled:NAME`` is the shipped model NAME, ``hf:ORG/NAME[@REV]`` the Hub
    checkpoint's folder in the Hugging Face cache (fetched when missing); anything else must exist."""
    text = str(value)
    if text.startswith(HF):
        return resolve_hf(text)
    if text.startswith(BUNDLED):
        name = text[len(BUNDLED):]
        models = bundled_models()
        if name not in models:
            known = ", ".join(BUNDLED + n for n in models) or "none"
            raise GenossmError(f"{text}: no such bundled model (bundled models: {known})")
        return models[name]
    path = Path(text)
    if not path.exists():
        raise GenossmError(f"{path}: no such model folder or checkpoint file (or bundled:NAME, see genossm models)")
    return path


def save_pretrained(model: BiMambaLM, folder: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/config.json`` (each atomically); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": model.config.to_dict(),
        "tokenizer": vocab_dict(),
        "extra": dict(extra or {}),
    }
    try:
        text = json.dumps(meta, indent=2, sort_keys=True)
    except TypeError as err:
        raise GenossmError(f"save_pretrained: extra must be JSON-serialisable ({err})") from err
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS_NAME, ".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
    with atomic_write(folder / CONFIG_NAME, "w") as handle:
        handle.write(text + "\n")
    return folder


def write_checksum(folder: str | os.PathLike) -> Path:
    """Record the sha256 of ``folder/model.safetensors`` beside it (what the bundled models ship with)."""
    folder = Path(folder)
    with atomic_write(folder / CHECKSUM_NAME, "w") as handle:
        handle.write(f"{file_sha256(folder / WEIGHTS_NAME)}  {WEIGHTS_NAME}\n")
    return folder / CHECKSUM_NAME


def verify_checksum(folder: Path) -> None:
    """When ``folder`` carries a checksum of its weights, the weights must match it."""
    path = folder / CHECKSUM_NAME
    if not path.is_file():
        return
    expected = path.read_text().split()[:1]
    if not expected or file_sha256(folder / WEIGHTS_NAME) != expected[0]:
        raise GenossmError(f"{folder / WEIGHTS_NAME}: its sha256 differs from {path.name}; the file is damaged "
                           "(reinstall genossm, or fetch the model again)")


def usable_scan_backend(config: BiMambaConfig, device, source: str) -> BiMambaConfig:
    """A saved ``scan_backend`` is a preference: where that backend cannot run (Triton without CUDA or Triton,
    the CPU kernel on a GPU or without its compiled library), the model loads with ``auto`` and says so."""
    from genossm.ops.selective_scan import _cpu_usable, _triton_usable

    backend = config.scan_backend
    probe = torch.empty(0, device=device)
    if backend == "triton" and not _triton_usable(probe) or backend == "cpu" and not _cpu_usable(probe, config.d_state):
        log.warning("%s: saved with scan_backend=%s, which cannot run here; using scan_backend=auto", source, backend)
        return dataclasses.replace(config, scan_backend="auto")
    return config


def _read_json_file(path: Path) -> dict:
    if not path.is_file():
        raise GenossmError(f"{path}: not found; a saved model folder holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GenossmError(f"{path}: not valid JSON ({err})") from err
    except OSError as err:
        raise GenossmError(f"{path}: cannot read it ({err.strerror or err})") from err
    if not isinstance(meta, dict):
        raise GenossmError(f"{path}: not a JSON object")
    return meta


def _foreign_config(folder: Path) -> dict | None:
    """A Hugging Face checkpoint's config.json (``model_type`` set), or None for a genossm model folder.
    A ``model_type`` genossm cannot run is refused, naming the ones it can."""
    meta = _read_json_file(folder / CONFIG_NAME)
    if "model_config" in meta or "model_type" not in meta:
        return None
    from genossm.models import caduceus

    if caduceus.is_caduceus(meta):
        return meta
    raise GenossmError(f"{folder / CONFIG_NAME}: model_type {meta['model_type']!r} is not one genossm can run; it runs "
                       f"genossm's own models and model_type {caduceus.MODEL_TYPE!r} (Caduceus, PlantCaduceus)")


def _read_config_json(folder: Path) -> dict:
    path = folder / CONFIG_NAME
    meta = _read_json_file(path)
    if "model_config" not in meta:
        raise GenossmError(f"{path}: no 'model_config' entry; is this a model saved by genossm?")
    version = meta.get("format_version", FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int):
        raise GenossmError(f"{path}: format_version must be an integer, got {version!r}")
    if not isinstance(meta.get("extra", {}), dict):
        raise GenossmError(f"{path}: 'extra' must be a JSON object, got {type(meta['extra']).__name__}")
    if meta.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
        raise GenossmError(f"{path}: format_version {meta['format_version']} is newer than this genossm reads "
                           f"({FORMAT_VERSION}); upgrade genossm")
    try:
        check_vocab(meta.get("tokenizer", vocab_dict()))
    except ValueError as err:
        raise GenossmError(f"{path}: {err}") from err
    return meta


def load_state(model: BiMambaLM, weights: dict, source: Path) -> None:
    """Load ``weights`` into ``model`` after checking that they are exactly its tensors (names, shapes), of a
    floating-point dtype, and finite; a failure names the file and the first offending tensors."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    shapes = [f"{k}: {tuple(weights[k].shape)} in the file, {tuple(v.shape)} from the config"
              for k, v in expected.items() if k in weights and weights[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es), first: " + "; ".join(shapes[:3]))
        if missing:
            parts.append(f"{len(missing)} missing tensor(s), first: {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s), first: {', '.join(unexpected[:3])}")
        raise GenossmError(f"{source}: weights do not match the model config: " + "; ".join(parts))
    not_float = [f"{k} ({v.dtype})" for k, v in weights.items() if not v.is_floating_point()]
    if not_float:
        raise GenossmError(f"{source}: {len(not_float)} tensor(s) are not floating point, first: {', '.join(not_float[:3])}")
    bad = [k for k, v in weights.items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise GenossmError(f"{source}: {len(bad)} tensor(s) hold NaN or infinite values, first: {', '.join(bad[:3])}; "
                           "the model is damaged or its training diverged")
    model.load_state_dict(weights, strict=True)


def _naming_hf(func):
    """Errors about a checkpoint fetched by ``hf:`` name it as the user wrote it, before the cached file."""
    @functools.wraps(func)
    def wrapper(path, *args, **kwargs):
        try:
            return func(path, *args, **kwargs)
        except GenossmError as err:
            text = str(path)
            if text.startswith(HF) and not str(err).startswith(text):
                raise GenossmError(f"{text}: {err}") from None
            raise

    return wrapper


@_naming_hf
def from_pretrained(path: str | os.PathLike, map_location="cpu") -> BiMambaLM:
    """Load a model: a folder written by :func:`save_pretrained`, a Lightning ``.ckpt`` file, ``bundled:NAME``,
    ``hf:ORG/NAME[@REVISION]`` or a local folder holding a Caduceus / PlantCaduceus checkpoint; eval mode."""
    path = model_path(path)
    if path.is_dir():
        foreign = _foreign_config(path)
        if foreign is not None:
            from genossm.models import caduceus

            model, weights, weights_path = caduceus.build(path, foreign, map_location)
            load_state(model, weights, weights_path)
            return model.to(map_location).eval()
        meta = _read_config_json(path)
        config = BiMambaConfig.from_dict(meta["model_config"], source=str(path / CONFIG_NAME))
        weights_path = path / WEIGHTS_NAME
        if not weights_path.is_file():
            raise GenossmError(f"{weights_path}: not found")
        verify_checksum(path)
        try:
            weights = load_file(str(weights_path), device=str(map_location))
        except (SafetensorError, OSError, ValueError) as err:
            raise GenossmError(f"{weights_path}: cannot read safetensors weights ({err})") from err
        source = weights_path
    elif path.is_file():  # a training checkpoint
        model_config, weights, _ = read_checkpoint(path, map_location)
        config = BiMambaConfig.from_dict(model_config, source=f"{path} (hyper_parameters['model_config'])")
        source = path
    else:
        raise GenossmError(f"{path}: no such model folder or checkpoint file")
    model = BiMambaLM(usable_scan_backend(config, map_location, str(source)))
    load_state(model, weights, source)
    return model.to(map_location).eval()


@_naming_hf
def load_extra(path: str | os.PathLike) -> dict:
    """The ``extra`` dict saved with a model (folder: config.json; .ckpt: hyper_parameters['extra']). For an
    imported checkpoint, what genossm knows about it: ``source`` (the ``hf:`` name and commit, or the folder),
    and for a known Hub checkpoint its repository, summary and training context (``train_window_len``)."""
    text = str(path)
    path = model_path(path)
    if path.is_dir():
        if _foreign_config(path) is not None:
            from genossm.models import caduceus

            return dict(caduceus.describe(path), source=_source_name(text, path))
        return dict(_read_config_json(path).get("extra") or {})
    if path.is_file():
        return read_checkpoint(path, "cpu")[2]
    raise GenossmError(f"{path}: no such model folder or checkpoint file")


def train_window_len(extra: dict | None) -> int | None:
    """The window a model was trained on, as its ``extra`` dict (:func:`load_extra`) records it; None if it does not."""
    window = (extra or {}).get("train_window_len")
    return int(window) if window else None


def default_window_len(extra: dict | None, *, fallback: int, cap: int | None = None) -> int:
    """The window a workflow reads when ``window_len=`` is not set: the model's training window
    (:func:`train_window_len` of ``extra``), at most ``cap``, or ``fallback`` when the model records none.

    The one rule; each workflow passes its own numbers: ``score-variants`` caps at 2048 and falls back to 2048,
    ``evaluate`` does not cap and falls back to 1024."""
    trained = train_window_len(extra)
    if trained is None:
        return int(fallback)
    return min(trained, int(cap)) if cap is not None else trained


def _source_name(text: str, folder: Path) -> str:
    """How a user names an imported checkpoint again: ``hf:ORG/NAME@COMMIT`` (the commit the cache holds) or
    the folder's absolute path."""
    if text.startswith(HF):
        repo, _ = parse_hf(text)
        commit = folder.name if folder.parent.name == "snapshots" else None
        return f"{HF}{repo}" + (f"@{commit}" if commit else "")
    return str(folder.resolve())


def save_region_model(folder, backbone: nn.Module, head: nn.Linear, meta: dict) -> Path:
    """Write a region model: ``save_pretrained`` backbone folder + ``head.safetensors``."""
    folder = Path(folder)
    meta = dict(meta, in_features=head.in_features, n_outputs=head.out_features)
    save_pretrained(backbone, folder, extra={"region_head": meta})
    with atomic_path(folder / HEAD_FILE, ".safetensors") as tmp:
        save_file({"weight": head.weight.detach().cpu().contiguous(), "bias": head.bias.detach().cpu().contiguous()}, str(tmp))
    return folder


def load_region_model(path, map_location="cpu") -> tuple[nn.Module, nn.Linear, dict]:
    """(backbone, head, meta) of a folder written by :func:`save_region_model` (``genossm finetune``)."""
    folder = model_path(path)
    head_file = folder / HEAD_FILE
    if not head_file.is_file():
        raise GenossmError(
            f"{folder} is not a fine-tuned region model (no {HEAD_FILE}); give the model/ folder written by genossm finetune"
        )
    meta = load_extra(folder).get("region_head")
    if not meta:
        raise GenossmError(f"{folder}/config.json has no region_head entry; it was not written by genossm finetune")
    backbone = from_pretrained(folder, map_location=map_location)
    state = load_file(str(head_file))
    head = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
    head.load_state_dict(state)
    return backbone, head, meta


# ---- the block a training checkpoint carries -------------------------------------------------------

CHECKPOINT_PREFIX = "model."  # the pretraining task keeps the backbone as self.model


def write_checkpoint_block(checkpoint: dict, model_config: Mapping, extra: Mapping | None = None) -> dict:
    """Write the model's block into a Lightning checkpoint being saved (the pretraining task calls this from
    ``on_save_checkpoint``): the config fields under ``hyper_parameters["model_config"]``, ``extra`` under
    ``hyper_parameters["extra"]``, as :func:`read_checkpoint` reads them. The weights are already there: the
    ``state_dict`` entries under :data:`CHECKPOINT_PREFIX` (the task keeps the model as ``self.model``); a
    checkpoint without them is refused here, when it is written, not when it is read. Returns ``checkpoint``."""
    state = checkpoint.get("state_dict")
    if isinstance(state, Mapping) and state and not any(str(k).startswith(CHECKPOINT_PREFIX) for k in state):
        raise GenossmError(f"this checkpoint's weights are not under '{CHECKPOINT_PREFIX}' (the task must keep its "
                           "model as self.model): genossm could not read the model back from it")
    hparams = checkpoint.setdefault("hyper_parameters", {})
    hparams["model_config"] = {str(k): v for k, v in dict(model_config).items()}
    hparams["extra"] = dict(extra or {})
    return checkpoint


def checkpoint_weights(state: dict) -> dict:
    """The model's weights in a LightningModule's ``state_dict``: the entries prefixed :data:`CHECKPOINT_PREFIX`,
    the prefix removed."""
    return {k[len(CHECKPOINT_PREFIX):]: v for k, v in state.items() if k.startswith(CHECKPOINT_PREFIX)}


def _load_checkpoint(path: Path, map_location) -> dict:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # hyper-parameters holding OmegaConf containers need the full unpickler (trusted file only)
        pass
    except (RuntimeError, EOFError, OSError) as err:
        raise GenossmError(f"{path}: cannot read as a PyTorch/Lightning checkpoint ({err})") from err
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad input file
        raise GenossmError(f"{path}: cannot read as a PyTorch/Lightning checkpoint ({err})") from err


def read_checkpoint(path: Path, map_location) -> tuple[dict, dict, dict]:
    """(model_config dict, the model's weights, extra) from a Lightning .ckpt of the pretraining task: its
    ``hyper_parameters["model_config"]`` (config fields), the ``state_dict`` entries prefixed ``model.`` (the
    prefix removed) and ``hyper_parameters["extra"]``."""
    ckpt = _load_checkpoint(path, map_location)
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hparams, dict) or "model_config" not in hparams:
        raise GenossmError(f"{path}: no hyper_parameters['model_config'] in this checkpoint; "
                           "was it written by genossm's pretraining task?")
    model_config = {str(k): v for k, v in dict(hparams["model_config"]).items()}
    weights = checkpoint_weights(ckpt.get("state_dict", {}))
    if not weights:
        raise GenossmError(f"{path}: no state_dict entries prefixed '{CHECKPOINT_PREFIX}'")
    extra = hparams.get("extra") or {}
    return model_config, weights, dict(extra)
