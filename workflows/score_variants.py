"""genossm score-variants: score a VCF/BCF/TSV of variants (or every substitution of a region) with a
pretrained model. See ``conf/score_variants.yaml`` for the options and :mod:`genossm.tasks.variants` for what
the scores mean.

compose (Hydra) -> instantiate the input (records, the batches of variant windows), the scorer around the
pretrained model, the shard writer and the Trainer -> predict (every rank streams its batches' scores into
its own shard) -> write: rank 0 merges the shards back into the input, in input order (the VCF with
genossm's INFO fields, the allele table, embeddings, heatmap). :func:`run` is the run of a composed config
(the command's and Python's); :func:`score_variants` is its keyword form.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
import warnings
from pathlib import Path

from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from genossm.atomic import check_writable
from genossm.config import given_keys, renamed_keys
from genossm.deprecation import renamed_keywords
from genossm.errors import GenossmError
from genossm.options import RunOptions, size
from genossm.paths import conf_dir
from genossm.workflows import user_errors

if TYPE_CHECKING:
    import lightning as L

    from genossm.data.genome import Genome
    from genossm.data.variants import VariantReader
    from genossm.tasks.variant_outputs import Summary

# The imports of torch, Lightning and the scoring modules (seconds on a small machine) are inside the functions
# that use them: the run says what it does (its first log line) before it loads them.

log = logging.getLogger("genossm.score_variants")

# old spelling -> new, accepted for one release ("mode" meant several things; batches hold alleles, not windows)
RENAMED = {"mode": "scan", "batch_size": "alleles_per_batch"}


@dataclasses.dataclass
class ScoreVariantsOptions(RunOptions):
    """The options of ``genossm score-variants`` (``conf/score_variants.yaml``), checked when made."""

    fasta: str | None = None
    """The reference genome the variants are called against (plain, gzip or bgzip FASTA)."""
    pretrained: str | None = None
    """The model: an exported folder, a ``.ckpt``, ``bundled:NAME`` or ``hf:ORG/NAME``."""
    variants: str | None = None
    """VCF/BCF (plain, bgzip, gzip) or TSV with chrom, pos, ref, alt (``scan=variants``)."""
    output: str | None = None
    """A VCF (``.vcf``, ``.vcf.gz``, ``.bcf``) keeping every input record plus a table beside it, or only the
    table (``.tsv``, ``.tsv.gz``, ``.parquet``)."""
    scan: str = "variants"
    """``variants`` (the ``variants=`` file) or ``saturation`` (every substitution of ``region=``, <= 10 kb)."""
    region: str | None = None
    """``CHR:START-END``: restricts an indexed VCF/BCF (``scan=variants``); the region (``scan=saturation``)."""
    table: str | None = None
    """The table beside a VCF output (default: the output's name with ``.tsv``)."""
    heatmap: str | None = None
    """The saturation heatmap (``.png``, ``.svg``, ``.pdf``; default: the table's name with ``.png``)."""
    embeddings: str | None = None
    """Also write the ref/alt embeddings per allele: ``.npy`` (alleles, 2, dim) or ``.parquet``."""
    window_len: int | None = size(None, null=True)
    """Bases the model reads around each variant; null: the model's train_window_len or 2048, the smaller."""
    alleles_per_batch: int = size(16)
    """Alleles scored per batch (``tokens_per_forward`` bounds each model call)."""
    strands: str = "auto"
    """``both``, ``forward`` or ``auto`` (forward only for an RC-equivariant model: both are equal)."""
    indel_flank: int = size(8, minimum=0)
    """Bases each side of an indel/MNV allele included in its pseudo-log-likelihood."""
    emb_dist: bool = True
    """Compute the embedding distance between the ref and alt windows."""
    distance: str = "cosine"
    """``cosine`` or ``euclidean``."""
    pooling: str = "mean"
    """``mean`` or ``center``: how the per-base embeddings become one."""
    tokens_per_forward: int | None = size(None, null=True)
    """Rows per model call = tokens_per_forward // window length; null: 262144 on a GPU, chosen on a CPU."""
    chunk_len: int | None = size(None, null=True)
    """The model's chunked long-sequence inference (e.g. 65536 for 1 Mb windows); null: whole windows."""
    num_workers: int = size(0, minimum=0)
    """DataLoader workers preparing the windows."""
    cache_dir: str | None = None
    """Where FASTA indexes go when the FASTA's folder is read-only."""
    progress: bool = True
    """Show the progress bar."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scan not in ("variants", "saturation"):
            raise GenossmError(f"scan= must be 'variants' or 'saturation', got {self.scan!r}")

    def check_required(self) -> None:
        """The keys a run cannot start without (before it says what it does)."""
        if self.output is None:
            raise GenossmError("output= is required (a .vcf/.vcf.gz/.bcf, .tsv or .parquet path)")
        if self.fasta is None:
            raise GenossmError("fasta= is required (the reference genome the variants are called against)")

    def describe(self) -> str:
        """One line saying what the run scores, with what, into what (the run's first log line)."""
        what = (f"every substitution of {self.region}" if self.scan == "saturation" else
                f"{self.variants}" + (f" ({self.region})" if self.region else ""))
        return f"score-variants: {what} against {self.fasta} with the model {self.pretrained}, writing {self.output}"


OPTION_NAMES = frozenset(field.name for field in dataclasses.fields(ScoreVariantsOptions) if field.name != "precision")


def _model_label(pretrained) -> str:
    from genossm.models.hub import BUNDLED, HF

    if pretrained is None:
        return "(a model passed from Python)"
    if str(pretrained).startswith((BUNDLED, HF)):
        return str(pretrained)
    return str(Path(pretrained).resolve())


@renamed_keywords(mode="scan", batch_size="alleles_per_batch")
def score_variants(
    pretrained: str | os.PathLike,
    fasta: str | os.PathLike,
    output: str | os.PathLike,
    variants: str | os.PathLike | None = None,
    *,
    scan: str = "variants",
    region: str | None = None,
    table: str | os.PathLike | None = None,
    heatmap: str | os.PathLike | None = None,
    embeddings: str | os.PathLike | None = None,
    window_len: int | None = None,
    alleles_per_batch: int = 16,
    strands: str = "auto",
    indel_flank: int = 8,
    emb_dist: bool = True,
    distance: str = "cosine",
    pooling: str = "mean",
    tokens_per_forward: int | None = None,
    chunk_len: int | None = None,
    num_workers: int = 0,
    cache_dir: str | None = None,
    trainer: dict | L.Trainer | None = None,
    progress: bool = True,
    model=None,
    seed: int = 0,
    torch_threads: int | str | None = "auto",
) -> Summary:
    """Score every allele of ``variants`` (or, with ``scan="saturation"``, every substitution in ``region``)
    and write ``output``: a VCF (``.vcf``, ``.vcf.gz``, ``.bcf``) keeping every input record plus a table
    beside it, or only the table (``.tsv``, ``.tsv.gz``, ``.parquet``). Returns the run's :class:`Summary`.
    The keywords are the command line's keys; the old ``mode=`` and ``batch_size=`` are still accepted (with a
    DeprecationWarning) as ``scan=`` and ``alleles_per_batch=``.

    The keyword form of :func:`run`: the keywords go into the composed ``score-variants`` config, which
    :func:`run` runs as the command does (seeding and CPU threads included). ``trainer``: a Lightning Trainer
    to run in, or Trainer arguments over the ``trainer`` group's; ``model``: a model object instead of
    ``pretrained``."""
    import lightning as L
    from omegaconf import open_dict

    from genossm.config import compose

    given = {name: value for name, value in locals().items() if name in OPTION_NAMES}  # the keywords, by option
    cfg = compose("score-variants")
    with open_dict(cfg):
        for key, value in given.items():
            cfg[key] = str(value) if isinstance(value, os.PathLike) else value
        if trainer is not None and not isinstance(trainer, L.Trainer):
            for key, value in dict(trainer).items():
                cfg.trainer[key] = value
    return run(cfg, model=model, trainer=trainer if isinstance(trainer, L.Trainer) else None)


def run(cfg: DictConfig, *, model=None, trainer: L.Trainer | None = None) -> Summary:
    """The ``genossm score-variants`` run of a composed config (:func:`genossm.compose`): seed and CPU threads
    as the command sets them, the Trainer from the ``trainer`` group (or ``trainer``), the model from
    ``pretrained`` (or ``model``), then score and write. Returns the run's :class:`Summary`."""
    spelled = renamed_keys(cfg, RENAMED, given_keys())  # old spellings move to their new keys, once
    opts = ScoreVariantsOptions.from_config(cfg, spelled=spelled)  # a bad value is named as the user wrote it
    opts.check_required()
    log.info("%s", opts.describe())
    from genossm.tasks.trainer import build_trainer, prepare_run

    prepare_run(cfg, num_workers=opts.num_workers)
    if trainer is None:  # a predict run writes nothing but its outputs: no logger, checkpoint or root folder
        trainer = build_trainer(cfg, default_root_dir=None, enable_progress_bar=False, enable_checkpointing=False,
                                enable_model_summary=False)
    return _score(opts, trainer, model=model)


def _score(options: ScoreVariantsOptions, trainer: L.Trainer, model=None) -> Summary:
    """Score and write from the options :func:`run` checked (its required keys included), in ``trainer``."""
    from torch.utils.data import DataLoader

    from genossm.data.genome import Genome, one_fasta
    from genossm.data.variant_windows import VariantBatches, saturation_records
    from genossm.data.variants import VariantReader
    from genossm.models import from_pretrained
    from genossm.models.heads import POOLINGS
    from genossm.tasks.callbacks import ShardWriter, VariantProgress
    from genossm.tasks.variant_outputs import Summary, is_table_path, is_vcf_path, write_scored_variants
    from genossm.tasks.variants import ScoringOptions, VariantScorer, default_window_len

    pretrained, fasta, output, variants = options.pretrained, options.fasta, options.output, options.variants
    scan, region, table, heatmap = options.scan, options.region, options.table, options.heatmap
    embeddings = options.embeddings
    window_len, strands, emb_dist = options.window_len, options.strands, options.emb_dist
    distance, pooling, cache_dir = options.distance, options.pooling, options.cache_dir
    started = time.perf_counter()
    output = Path(output)  # output and fasta are set: run() checked them before its first log line
    if not (is_vcf_path(output) or is_table_path(output)):
        raise GenossmError(f"output={output}: name it .vcf, .vcf.gz, .bcf, .tsv, .tsv.gz or .parquet")
    fasta = one_fasta(fasta, "score-variants")
    check_output_paths(output, table=table, heatmap=heatmap, embeddings=embeddings, variants=variants, fasta=fasta,
                       saturation=scan == "saturation")
    genome = Genome(fasta, cache_dir=cache_dir)
    notes: list[str] = []
    if scan == "saturation":
        if not region:
            raise GenossmError("saturation mutagenesis (scan=saturation) needs region=CHR:START-END (at most 10 kb)")
        if is_vcf_path(output):
            raise GenossmError(f"saturation mutagenesis (scan=saturation) writes a table: name output .tsv or .parquet, "
                               f"not {output.name}")
        list(saturation_records(genome, region))[:0]  # validate the region before loading the model
        records = lambda: saturation_records(genome, region)  # noqa: E731
        reader = None
    else:
        if variants is None:
            raise GenossmError("variants= is required (a VCF, BCF or TSV file)")
        reader = VariantReader(variants, region=region)
        if is_vcf_path(output) and reader.format == "tsv":
            raise GenossmError(f"variants={variants} is a TSV, so the output cannot be a VCF: name output .tsv or .parquet")
        if region:
            notes += _region_notes(region, reader, genome)
        records = lambda: iter(reader)  # noqa: E731

    if model is None:
        if pretrained is None:
            raise GenossmError("pretrained= is required (a folder written by save_pretrained, or a .ckpt)")
        model = from_pretrained(pretrained)
    if window_len is None:
        window_len = default_window_len(pretrained)
    opts = ScoringOptions(window_len=window_len, strands=strands, indel_flank=options.indel_flank, emb_dist=emb_dist,
                          distance=distance, pooling=pooling, keep_embeddings=embeddings is not None,
                          tokens_per_forward=options.tokens_per_forward, chunk_len=options.chunk_len)
    opts.check()
    if embeddings is not None and not emb_dist:
        raise GenossmError("embeddings= needs emb_dist: true")
    model_cfg = model.config
    n_strands = 1 if strands == "forward" or (strands == "auto" and model_cfg.rc_equivariant) else 2
    emb_strands = model.embed_strands(opts.pooling, one_strand_poolings=POOLINGS)
    dataset = VariantBatches(records, genome.path, options.alleles_per_batch, dict(
        opts.window_args(), causal=not model_cfg.bidirectional, strands=n_strands, emb_strands=emb_strands), cache_dir=cache_dir)
    loader = DataLoader(dataset, batch_size=None, num_workers=options.num_workers)

    total = _allele_total(reader, records) if options.progress else None
    command = " ".join([
        "score-variants",
        f"pretrained={_model_label(pretrained)}",
        f"model_config=sha256:{config_hash(model_cfg)}", f"fasta={Path(fasta).resolve()}",
        # the header's record of the run keeps the old key name: outputs stay byte for byte the same
        f"variants={Path(variants).resolve()}" if variants is not None else f"mode={scan}",
        *([f"region={region}"] if region else []),
        f"window_len={opts.window_len}", f"strands={strands}({'forward' if n_strands == 1 else 'both'})",
        f"indel_flank={opts.indel_flank}", f"emb_dist={str(bool(emb_dist)).lower()}",
        *([f"distance={distance}", f"pooling={pooling}"] if emb_dist else []),
        f"model={'masked' if model_cfg.bidirectional else 'causal'}",
    ])
    parts = output.with_name(f".{output.name}.genossm-parts")
    writer = ShardWriter(parts, keep_embeddings=embeddings is not None)
    callbacks = [writer, VariantProgress(total=total, enabled=options.progress)]
    trainer.callbacks.extend(callbacks)
    pl_trainer = trainer
    scorer = VariantScorer(model, opts)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*infer the batch indices.*")
            pl_trainer.predict(scorer, dataloaders=loader, return_predictions=False)
        writer.close()
        pl_trainer.strategy.barrier("genossm-shards-written")  # every rank's shard is complete
        summary = Summary()
        if pl_trainer.is_global_zero:
            summary = write_scored_variants(parts, output, table, reader, records, heatmap, embeddings, model.embed_dim, scan,
                                            indel_flank=opts.indel_flank, command=command)
            summary.notes += notes
            summary.seconds = time.perf_counter() - started
            log.info("%s", summary.text())
    finally:
        writer.close()
        if pl_trainer.is_global_zero and parts.exists():
            shutil.rmtree(parts, ignore_errors=True)
    return summary


HEATMAP_SUFFIXES = (".png", ".svg", ".pdf")


def check_output_paths(output: Path, *, table, heatmap, embeddings, variants, fasta, saturation: bool) -> None:
    """Before any work: every output goes to its own file in a folder that can be written, none over an input,
    each in a format its name says (two keys naming one file lost one output, or replaced the input, with exit
    status 0; an output folder that could not be written failed after all the scoring work)."""
    from genossm.tasks.variant_outputs import is_vcf_path, table_path

    table_file = table_path(output, table)
    named = {f"output={output}": output}
    if table and not is_vcf_path(output) and os.path.realpath(table) != os.path.realpath(output):
        raise GenossmError(f"output={output} is the table itself: table={table} names a table beside a VCF output "
                           "only; drop table= (or name output .vcf/.vcf.gz/.bcf)")
    if table_file is not None and (table or Path(table_file) != output) and is_vcf_path(output):
        named[f"table={table}" if table else f"the table beside output= ({table_file}; table= names another)"] = \
            Path(table_file)
    if saturation:
        heat = Path(heatmap) if heatmap else Path(table_file).with_suffix(".png")
        named[f"heatmap={heatmap}" if heatmap else f"the heatmap beside the table ({heat}; heatmap= names another)"] \
            = heat
    if embeddings is not None:
        named[f"embeddings={embeddings}"] = Path(embeddings)
    inputs = {"variants": variants, "fasta": fasta}
    seen: dict[str, str] = {}
    for label, path in named.items():
        where = os.path.realpath(path)
        if os.path.isdir(where):
            raise GenossmError(f"{label}: is a folder; give a file name for the output")
        for key, source in inputs.items():
            if source is not None and not isinstance(source, (list, tuple)) and os.path.realpath(source) == where:
                raise GenossmError(f"{label} is also {key}=: the output would replace the input; choose another name")
        if where in seen:
            raise GenossmError(f"{seen[where]} and {label} are the same file: one output would replace the other; "
                               "give each its own name")
        seen[where] = label
    if saturation and heat.suffix.lower() not in HEATMAP_SUFFIXES:
        raise GenossmError(f"heatmap={heat}: name it .png, .svg or .pdf (the heatmap is drawn in the format its name "
                           "says)")
    for label, path in named.items():
        check_writable(path, label)


def config_hash(model_cfg) -> str:
    """A short hash of the model's configuration: which architecture made a scored file."""
    blob = json.dumps(dataclasses.asdict(model_cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _region_notes(region: str, reader: VariantReader, genome: Genome) -> list[str]:
    """Stop when ``region``'s contig is in neither file; say so when it is in the FASTA only (no records)."""
    from genossm.data.variants import parse_region

    if reader.format == "tsv" or reader.region_contig() is not None:
        return []
    contig = parse_region(region)[0]
    try:
        name = genome.resolve(contig)
    except GenossmError:
        vcf_contigs = sorted(set(reader.header.contigs))
        raise GenossmError(
            f"region={region}: contig {contig!r} is neither in {reader.path} (contigs: "
            f"{', '.join(vcf_contigs[:10]) or 'none declared'}{', ...' if len(vcf_contigs) > 10 else ''}) nor in "
            f"{genome.path} (contigs: {', '.join(list(genome.all_lengths)[:10])}"
            f"{', ...' if len(genome.all_lengths) > 10 else ''}); chr/MT aliases were tried"
        ) from None
    return [f"no records: {reader.path} has none on {contig} (contig {name} of {genome.path})"]


def _allele_total(reader: VariantReader | None, records) -> int | None:
    """How many alleles the run scores, for the progress bar, when it is cheap to know: a VCF/BCF is read
    once before scoring anyway (:meth:`VariantReader.survey`), a saturation region is at most 10 kb, a TSV
    under 50 MB is counted."""
    if reader is None:
        return sum(max(len(r.alts), 1) for r in records())
    if reader.format == "tsv" and reader.path.stat().st_size > 50 << 20:
        return None
    return reader.survey().alleles


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="score_variants")
@user_errors
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
