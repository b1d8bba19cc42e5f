"""Caduceus and PlantCaduceus checkpoints (Hugging Face ``model_type: caduceus``) as genossm models.

A Caduceus checkpoint folder (what ``snapshot_download`` or ``git clone`` of a Hub repository gives) holds
``config.json``, the weights (``model.safetensors`` or ``pytorch_model.bin``) and tokenizer files. Nothing in
it is executed: the config is read as data, ``.bin`` files with ``torch.load(weights_only=True)``.

How the original model maps onto :class:`~genossm.models.bimamba.BiMambaLM` (shapes as stored; E = expand ·
d_model, R = dt_rank, N = d_state):

========================================================  ==========================================================
Caduceus                                                  genossm
========================================================  ==========================================================
``embeddings.word_embeddings[.embedding].weight`` [V, D]  ``embedding.weight``; genossm's tokens pick their rows
                                                          through ``token_ids`` (A C G T N pad mask cls)
``layers.i.norm.weight`` (RMSNorm)                        ``layers.i.norm.weight``
``mamba_fwd.in_proj`` [2E, D] (x rows, then z)            ``branches.0.in_proj``; with ``bidirectional_weight_tie``
                                                          the reverse direction shares it (``share_in_proj``)
``mamba_{fwd,rev}.conv1d`` [E, 1, 4] + bias               ``branches.{0,1}.conv`` (causal / anti-causal)
``mamba_{fwd,rev}.x_proj`` [R + 2N, E]                    ``branches.{0,1}.x_proj``
``mamba_{fwd,rev}.dt_proj.weight`` [E, R], ``.bias``      ``branches.{0,1}.dt_proj.weight``, ``dt_bias``
``mamba_{fwd,rev}.A_log``, ``.D``                         ``branches.{0,1}.A_log``, ``D``
``mamba_fwd.out_proj`` [D, E] (tied: shared)              ``out_proj`` (``add``); untied: ``proj`` over [y_f; y_r]
``norm_f.weight``                                         ``norm_f.weight``
LM head (tied to the embedding, or stored)                ``lm_head``: the A/C/G/T rows only, bias 0
========================================================  ==========================================================

``mamba_rev`` runs Mamba on the flipped sequence and flips its output back: that is a reverse scan with an
anti-causal convolution, which genossm's untied bidirectional mixer computes without flipping anything.

**RCPS (Caduceus-PS, PlantCaduceus).** Caduceus keeps the two strands side by side in the channels ([forward |
reverse complement], the second half channel-reversed); genossm stacks them on the batch axis (the second
strand embeds the complement). With ``fused_add_norm: true`` (every published config) each original block
reads the *other* half as its forward strand: its fused add-norm takes the second half's residual first. In
genossm's layout that is ``strand_swap``: before every block the strands trade places and reverse their
channels. The final norm swaps nothing, and the RCPS LM head is genossm's RC head. ``fused_add_norm: false``
(the unfused add-norm wrapper) swaps nothing, which is genossm's plain ``rc_equivariant`` model.

**Scores.** genossm reads the logits of A, C, G and T only and normalises over those four (a log-softmax over
four bases), whatever the checkpoint's vocabulary; the original models' other tokens are never predicted.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from genossm.errors import GenossmError
from genossm.models.bimamba import BiMambaConfig, BiMambaLM
from genossm.vocab import COMPLEMENT, NUM_BASES, VOCAB

MODEL_TYPE = "caduceus"
SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_NAME = "pytorch_model.bin"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

# ssm_cfg keys that only matter for initialisation or for which kernel runs (not for the function computed)
_SSM_INIT_KEYS = {"dt_min", "dt_max", "dt_init", "dt_scale", "dt_init_floor", "use_fast_path", "layer_idx"}
_SSM_KEYS = {"d_state", "d_conv", "expand", "dt_rank", "conv_bias", "bias"} | _SSM_INIT_KEYS
# the original CaduceusTokenizer: seven specials, then the characters from id 7
_CADUCEUS_SPECIALS = ("[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "[RESERVED]", "[UNK]")

# The public checkpoints genossm knows: Hub repository -> facts for `genossm models` and default windows.
# Parameters are counted by genossm from the published configs; download sizes are the weight files'.
KNOWN_CHECKPOINTS: dict[str, dict] = {
    "kuleshov-group/caduceus-ps_seqlen-131k_d_model-256_n_layer-16": {
        "summary": "Caduceus-PS: human (hg38), RC-equivariant, 16 layers x 256",
        "parameters": 7_725_312, "context": 131_072, "download": "31 MB", "licence": "Apache-2.0"},
    "kuleshov-group/caduceus-ph_seqlen-131k_d_model-256_n_layer-16": {
        "summary": "Caduceus-Ph: human (hg38), RC by averaging both strands, 16 layers x 256",
        "parameters": 7_725_312, "context": 131_072, "download": "31 MB", "licence": "Apache-2.0"},
    "kuleshov-group/PlantCaduceus_l20": {
        "summary": "PlantCaduceus: 16 angiosperm genomes, RC-equivariant, 20 layers x 384",
        "parameters": 20_870_016, "context": 512, "download": "84 MB", "licence": "Apache-2.0"},
    "kuleshov-group/PlantCaduceus_l24": {
        "summary": "PlantCaduceus: 16 angiosperm genomes, RC-equivariant, 24 layers x 512",
        "parameters": 43_614_720, "context": 512, "download": "175 MB", "licence": "Apache-2.0"},
    "kuleshov-group/PlantCaduceus_l28": {
        "summary": "PlantCaduceus: 16 angiosperm genomes, RC-equivariant, 28 layers x 768",
        "parameters": 112_107_264, "context": 512, "download": "448 MB", "licence": "Apache-2.0"},
    "kuleshov-group/PlantCaduceus_l32": {
        "summary": "PlantCaduceus: 16 angiosperm genomes, RC-equivariant, 32 layers x 1024",
        "parameters": 225_354_752, "context": 512, "download": "902 MB", "licence": "Apache-2.0"},
}


def is_caduceus(meta: dict) -> bool:
    return isinstance(meta, dict) and meta.get("model_type") == MODEL_TYPE


def known_checkpoint(folder: Path) -> tuple[str, dict] | tuple[None, dict]:
    """The known Hub repository a local folder holds, recognised by its name (a clone ``PlantCaduceus_l20``,
    or the Hub cache's ``models--kuleshov-group--PlantCaduceus_l20/snapshots/<commit>``)."""
    parts = {p.lower() for p in Path(folder).resolve().parts}
    for repo, facts in KNOWN_CHECKPOINTS.items():
        name = repo.split("/")[1].lower()
        if name in parts or f"models--{repo.replace('/', '--')}".lower() in parts:
            return repo, facts
    return None, {}


# ---- config --------------------------------------------------------------------------------------------
def _option(hf: dict, key: str, default, types, source: str):
    value = hf.get(key, default)
    if types is bool and not isinstance(value, bool) or (
            types is not bool and (isinstance(value, bool) or not isinstance(value, types))):
        raise GenossmError(f"{source}: {key} must be {getattr(types, '__name__', types)}, got {value!r}")
    return value


def complement_map(hf: dict, vocab_size: int, source: str) -> list[int]:
    """config.json's complement_map by key (its string keys are token ids), padded with identity."""
    raw = hf.get("complement_map")
    table = list(range(vocab_size))
    if raw is None:
        return table
    if not isinstance(raw, dict):
        raise GenossmError(f"{source}: complement_map must be a mapping of token ids, got {type(raw).__name__}")
    for key, value in raw.items():
        try:
            k, v = int(key), int(value)
        except (TypeError, ValueError):
            raise GenossmError(f"{source}: complement_map entry {key!r}: {value!r} is not a pair of token ids") from None
        if not (0 <= k < vocab_size and 0 <= v < vocab_size):
            raise GenossmError(f"{source}: complement_map entry {key}: {value} is outside the vocabulary of {vocab_size}")
        table[k] = v
    return table


def model_config(hf: dict, source: str, tied_head: bool = True, token_ids: list[int] | None = None) -> BiMambaConfig:
    """The genossm config computing what a Caduceus ``config.json`` describes; every option the original code
    reads is checked, and one genossm cannot run is refused by name."""
    d_model = _option(hf, "d_model", None, int, source)
    n_layer = _option(hf, "n_layer", None, int, source)
    ssm = hf.get("ssm_cfg") or {}
    if not isinstance(ssm, dict):
        raise GenossmError(f"{source}: ssm_cfg must be a mapping, got {type(ssm).__name__}")
    unknown = sorted(set(ssm) - _SSM_KEYS)
    if unknown:
        raise GenossmError(f"{source}: ssm_cfg option(s) {unknown} are not part of the Mamba (v1) layer genossm runs")
    if ssm.get("bias", False):
        raise GenossmError(f"{source}: ssm_cfg.bias: true (biases on in_proj/out_proj) is not supported")
    if not _option(hf, "rms_norm", True, bool, source):
        raise GenossmError(f"{source}: rms_norm: false (LayerNorm) is not supported; every published Caduceus uses RMSNorm")
    if not _option(hf, "bidirectional", True, bool, source):
        raise GenossmError(f"{source}: bidirectional: false (a causal Caduceus) is not supported")
    strategy = _option(hf, "bidirectional_strategy", "add", str, source)
    if strategy != "add":
        raise GenossmError(f"{source}: bidirectional_strategy {strategy!r} is not supported (only 'add')")
    weight_tie = _option(hf, "bidirectional_weight_tie", True, bool, source)
    rcps = _option(hf, "rcps", False, bool, source)
    fused = _option(hf, "fused_add_norm", True, bool, source)
    _option(hf, "residual_in_fp32", False, bool, source)  # fp32 weights: the residual is fp32 either way
    eps = _option(hf, "norm_epsilon", 1e-5, (int, float), source)
    vocab_size = _option(hf, "vocab_size", None, int, source)
    multiple = _option(hf, "pad_vocab_size_multiple", 1, int, source)
    if multiple > 0 and vocab_size % multiple:
        vocab_size += multiple - vocab_size % multiple  # as the original model pads it
    d_conv = ssm.get("d_conv", 4)
    values = dict(
        d_model=d_model, n_layers=n_layer, d_state=ssm.get("d_state", 16), d_conv=d_conv,
        expand=ssm.get("expand", 2), dt_rank=ssm.get("dt_rank", "auto"),
        bidirectional=True, tie_directions=False, share_in_proj=weight_tie,
        bidirectional_strategy="add" if weight_tie else "proj",
        rc_equivariant=rcps, strand_swap=rcps and fused, tie_embeddings=tied_head,
        vocab_size=vocab_size, norm_eps=float(eps), token_ids=token_ids,
    )
    return BiMambaConfig.from_dict(values, source=source)


# ---- tokens --------------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GenossmError(f"{path}: not valid JSON ({err})") from err
    return data if isinstance(data, dict) else None


def checkpoint_vocab(folder: Path, vocab_size: int) -> dict[str, int]:
    """Token string -> id of the checkpoint's tokenizer: ``tokenizer.json`` (PlantCaduceus' fast tokenizer),
    else ``tokenizer_config.json``'s CaduceusTokenizer (specials 0-6, characters from 7), else the vocabulary its
    size says (16: Caduceus, 8: PlantCaduceus)."""
    fast = _read_json(folder / "tokenizer.json")
    if fast is not None:
        vocab = dict((fast.get("model") or {}).get("vocab") or {})
        for added in fast.get("added_tokens") or []:
            if isinstance(added, dict) and "content" in added and "id" in added:
                vocab[added["content"]] = added["id"]
        if vocab:
            return vocab
    slow = _read_json(folder / "tokenizer_config.json") or {}
    if slow.get("tokenizer_class") == "CaduceusTokenizer":
        return caduceus_vocab(slow.get("characters") or ("A", "C", "G", "T", "N"))
    known = published_vocab(vocab_size) if not slow else None
    if known is None:
        raise GenossmError(f"{folder}: no tokenizer.json or CaduceusTokenizer tokenizer_config.json to read the "
                           "token ids from")
    return known


def caduceus_vocab(characters=("A", "C", "G", "T", "N")) -> dict[str, int]:
    """The original CaduceusTokenizer's ids: seven specials, then the characters from 7."""
    return {**{t: i for i, t in enumerate(_CADUCEUS_SPECIALS)}, **{c: i + 7 for i, c in enumerate(characters)}}


def published_vocab(vocab_size: int) -> dict[str, int] | None:
    """The vocabulary of the published checkpoints of this size: 16 Caduceus, 8 PlantCaduceus; else None."""
    if vocab_size == 16:
        return caduceus_vocab()
    if vocab_size == 8:
        return {"[PAD]": 0, "[MASK]": 1, "[UNK]": 2, "a": 3, "c": 4, "g": 5, "t": 6}
    return None


def token_ids(vocab: dict[str, int], complement_map: list[int], source: str) -> list[int]:
    """The checkpoint's id for each genossm token (A C G T N <pad> <mask> <cls>). N falls back to [UNK], as the
    original tokenizers do; <cls> to [CLS] or [UNK]. The complement map must agree with genossm's on the
    bases, so that reverse complements mean the same."""
    def find(*names):
        for name in names:
            for key in (name, name.lower(), name.upper()):
                if key in vocab:
                    return int(vocab[key])
        return None

    wanted = {"A": ("A",), "C": ("C",), "G": ("G",), "T": ("T",), "N": ("N", "[UNK]"), "<pad>": ("[PAD]",),
              "<mask>": ("[MASK]",), "<cls>": ("[CLS]", "[UNK]")}
    ids = []
    for token in VOCAB:
        found = find(*wanted[token])
        if found is None:
            raise GenossmError(f"{source}: the tokenizer has no token for {token} (looked for {', '.join(wanted[token])})")
        ids.append(found)
    for genossm_id in range(len(VOCAB)):
        if complement_map[ids[genossm_id]] != ids[COMPLEMENT[genossm_id]]:
            raise GenossmError(f"{source}: complement_map sends {VOCAB[genossm_id]} (id {ids[genossm_id]}) to id "
                               f"{complement_map[ids[genossm_id]]}, not to {VOCAB[COMPLEMENT[genossm_id]]} "
                               f"(id {ids[COMPLEMENT[genossm_id]]})")
    return ids


# ---- weights -------------------------------------------------------------------------------------------
def read_weights(folder: Path, map_location="cpu") -> tuple[dict[str, torch.Tensor], Path]:
    """The checkpoint's tensors: ``model.safetensors`` (or its shards), else ``pytorch_model.bin``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    index = _read_json(folder / SAFETENSORS_INDEX)
    files = sorted(set((index or {}).get("weight_map", {}).values())) if index else []
    if not files and (folder / SAFETENSORS_NAME).is_file():
        files = [SAFETENSORS_NAME]
    if files:
        weights = {}
        for name in files:
            path = folder / name
            if not path.is_file():
                raise GenossmError(f"{path}: missing (listed in {folder / SAFETENSORS_INDEX})")
            try:
                weights.update(load_file(str(path), device=str(map_location)))
            except (SafetensorError, OSError, ValueError) as err:
                raise GenossmError(f"{path}: cannot read safetensors weights ({err})") from err
        return weights, folder / files[0]
    path = folder / BIN_NAME
    if not path.is_file():
        raise GenossmError(f"{folder}: no weights ({SAFETENSORS_NAME} or {BIN_NAME}) beside config.json")
    try:
        weights = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch.load raises many kinds (pickle, zip, EOF); name the file
        raise GenossmError(f"{path}: cannot read the PyTorch weights ({type(err).__name__}: {err})") from err
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise GenossmError(f"{path}: not a state dict of tensors")
    return weights, path


def _canonical(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys without the ``caduceus.`` / ``backbone.`` prefixes and the RCPS ``submodule.`` level."""
    out = {}
    for key, value in weights.items():
        name = key
        for prefix in ("caduceus.", "backbone."):
            if name.startswith(prefix):
                name = name[len(prefix):]
        name = name.replace(".submodule.", ".").replace("word_embeddings.embedding.", "word_embeddings.")
        out[name] = value
    return out


def convert_weights(weights: dict[str, torch.Tensor], cfg: BiMambaConfig, source: Path) -> dict[str, torch.Tensor]:
    """A Caduceus state dict (any of the published layouts) -> :class:`BiMambaLM`'s state dict for ``cfg``."""
    w = _canonical(weights)
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in w:
            raise GenossmError(f"{source}: tensor {name!r} is missing")
        used.add(name)
        return w[name]

    def same_or_absent(name: str, like: torch.Tensor):
        if name in w:
            used.add(name)
            if w[name].shape != like.shape or not torch.equal(w[name], like):
                raise GenossmError(f"{source}: {name} differs from the forward direction's, but "
                                   "bidirectional_weight_tie says they are one tensor")

    out = {"embedding.weight": take("embeddings.word_embeddings.weight"), "norm_f.weight": take("norm_f.weight")}
    for i in range(cfg.n_layers):
        src, dst = f"layers.{i}.mixer.mamba_", f"layers.{i}.mixer."
        out[f"layers.{i}.norm.weight"] = take(f"layers.{i}.norm.weight")
        for b, direction in enumerate(("fwd", "rev")):
            s, d = f"{src}{direction}.", f"{dst}branches.{b}."
            if b == 0 or not cfg.share_in_proj:
                out[d + "in_proj.weight"] = take(s + "in_proj.weight")
            else:
                same_or_absent(s + "in_proj.weight", out[f"{dst}branches.0.in_proj.weight"])
            out[d + "conv.weight"] = take(s + "conv1d.weight")
            out[d + "conv.bias"] = (take(s + "conv1d.bias") if s + "conv1d.bias" in w
                                    else torch.zeros(out[d + "conv.weight"].shape[0]))
            out[d + "x_proj.weight"] = take(s + "x_proj.weight")
            out[d + "dt_proj.weight"] = take(s + "dt_proj.weight")
            out[d + "dt_bias"] = take(s + "dt_proj.bias")
            out[d + "A_log"] = take(s + "A_log")
            out[d + "D"] = take(s + "D")
        fwd_out = take(src + "fwd.out_proj.weight")
        if cfg.share_in_proj:
            same_or_absent(src + "rev.out_proj.weight", fwd_out)
            out[dst + "out_proj.weight"] = fwd_out
        else:  # separate out projections summed = one projection over [y_fwd; y_rev]
            out[dst + "out_proj.weight"] = torch.cat([fwd_out, take(src + "rev.out_proj.weight")], dim=1)
    head = next((w[k] for k in ("lm_head.lm_head.weight", "lm_head.weight") if k in w), None)
    used.update(k for k in ("lm_head.lm_head.weight", "lm_head.weight") if k in w)
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = head[cfg.token_ids[:NUM_BASES]]
    out["lm_head.bias"] = torch.zeros(NUM_BASES, dtype=out["embedding.weight"].dtype)
    # buffers the original model rebuilds from the config; genossm checks the config's map instead
    used.update(k for k in w if k.endswith("complement_map"))
    extra = sorted(set(w) - used)
    if extra:
        raise GenossmError(f"{source}: {len(extra)} tensor(s) genossm does not know how to map, first: "
                           f"{', '.join(extra[:3])}")
    return out


def head_is_tied(weights: dict[str, torch.Tensor]) -> bool:
    """Whether a stored LM head is the word embedding (always, in the published checkpoints: transformers drops
    the tied copy from safetensors, and no head is stored for a bare backbone)."""
    w = _canonical(weights)
    head = next((w[k] for k in ("lm_head.lm_head.weight", "lm_head.weight") if k in w), None)
    emb = w.get("embeddings.word_embeddings.weight")
    return head is None or emb is None or (head.shape == emb.shape and torch.equal(head, emb))


def build(folder: Path, hf_config: dict, map_location="cpu") -> tuple[BiMambaLM, dict[str, torch.Tensor], Path]:
    """The genossm model of a Caduceus checkpoint folder, its weights mapped onto genossm's names, and the
    weights file they came from; :func:`genossm.models.hub.from_pretrained` loads and checks them."""
    source = str(folder / "config.json")
    weights, weights_path = read_weights(folder, map_location)
    vocab_size = _option(hf_config, "vocab_size", None, int, source)
    provisional = model_config(hf_config, source)  # sizes and the padded vocabulary, before the token map
    comp = complement_map(hf_config, provisional.vocab_size, source)
    ids = token_ids(checkpoint_vocab(folder, vocab_size), comp, source)
    cfg = model_config(hf_config, source, tied_head=head_is_tied(weights), token_ids=ids)
    return BiMambaLM(cfg), convert_weights(weights, cfg, weights_path), weights_path


def describe(folder: Path) -> dict:
    """What genossm records about a checkpoint it imported (a model's ``extra``)."""
    repo, facts = known_checkpoint(folder)
    extra = {"imported_from": MODEL_TYPE}
    if repo:
        extra.update(hub_repo=repo, summary=facts["summary"], train_window_len=facts["context"])
    return extra


def parameter_count(hf_config: dict) -> int:
    """Parameters of the model a config describes (each tied tensor counted once), without building it."""
    cfg = model_config(hf_config, "config")
    with torch.device("meta"):
        return BiMambaLM(cfg).num_parameters() - NUM_BASES  # genossm's zero LM-head bias is not a Caduceus weight


__all__ = ["KNOWN_CHECKPOINTS", "is_caduceus", "build", "describe", "model_config", "convert_weights", "read_weights",
           "token_ids", "checkpoint_vocab", "parameter_count", "known_checkpoint"]
