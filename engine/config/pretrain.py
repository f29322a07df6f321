"""`PretrainConfig`: every knob of `bertforge pretrain`, typed, in sections — data, objective, model, batch,
optimisation, masking, precision/distribution, run — with a docstring under every field and every check in `__post_init__`
(a section checks its own fields; `PretrainConfig` checks the rules that span sections).

Field names are unique across sections, so each is one flag (`--max-seq-length`, `--zero-stage`, ...) and the flat
`{field: value}` form (`from_flat` / `to_flat`) is the command line's and the checkpoints' view. Derived quantities
(gradient accumulation, total steps from a token budget) are methods because they depend on the world size, which
is only known at launch. DeepSpeed's JSON is generated from this config by engine/deepspeed.py."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from bertforge.config.checks import (DEFAULT_REPORT_TO, check_choice, check_non_negative, check_positive_int,
                                     check_report_to, flag)
from bertforge.config.model import KERNEL_BACKENDS, PRESETS, ModelConfig, preset, unknown_preset
from bertforge.config.parallel import PRECISIONS, ParallelConfig
from bertforge.errors import ConfigError

OPTIMIZERS = ("adamw", "lamb")
DECAYS = ("linear", "poly", "cosine", "constant")
# Hugging Face's lr_scheduler_type names -> ours (one name per concept; 'linear' and 'cosine' are the same in both).
# Ours always warm up first (--warmup-steps / --warmup-ratio), so HF's 'constant_with_warmup' is our 'constant';
# HF's 'constant' (no warmup) is our 'constant' with --warmup-steps 0.
HF_SCHEDULES = {"polynomial": "poly", "constant_with_warmup": "constant"}
MASKING_PLACES = ("host", "device")
RANDOM_REPLACEMENTS = ("unigram", "uniform")
OBJECTIVES = ("mlm+nsp", "mlm+sop", "mlm")
REPLACED = {"eval_batches": "eval_samples"}
"""Settings replaced by another of a new meaning: {old name: new name}. The old name, as a flag, a config file's key
or a Python keyword, is refused in one line naming the new one (`replaced_setting`), never converted; only a --resume
of a checkpoint written with the old name converts it, saying so (engine/training/trainer.py)."""


def replaced_setting(name: str, values: Mapping | None = None, as_flag: bool = False) -> str:
    """The one line refusing replaced setting `name` (a key of REPLACED), in flag (`as_flag`) or field spelling;
    `values`: the other settings given with it, for the equivalent value where they tell it."""
    spell = flag if as_flag else str
    old, micro = (values or {}).get(name), (values or {}).get("micro_batch", BatchSection.micro_batch)
    same = f" (the old count x {spell('micro_batch')}: the samples it scored)"
    if isinstance(old, int) and isinstance(micro, int):
        same = f" ({old} micro batches of {micro} were the first {old * micro} samples)"
    return (f"{spell(name)} is replaced by {spell(REPLACED[name])}: the held-out set is a number of samples, the same "
            f"for any {spell('micro_batch')} and number of ranks; give {spell(REPLACED[name])} N{same}")


@dataclass
class DataSection:
    data_dir: str = ""
    """Prepared dataset directory (`bertforge prepare` output: shards + its tokenizer hash), or a weighted blend of
    several prepared with one tokenizer: 'W:DIR W:DIR ...' (e.g. "0.7:wiki_data 0.3:books_data", spaces or commas)
    or a .json / .yaml list of {path, weight} (engine/data/blend.py). Flag: --data."""
    tokenizer: str = ""
    """Tokenizer directory the dataset was prepared with (checked against the dataset's tokenizer hash; its files go
    into the Hugging Face export)."""
    synthetic_vocab: int = 0
    """Train on deterministic synthetic batches with a vocabulary of this many tokens instead of --data (tests,
    benchmarks); 0 = off."""
    eval_fraction: float = 0.05
    """Fraction of the dataset's documents held out for evaluation (chosen by document hash, stable)."""
    data_cache: str = ""
    """Folder for the dataset's derived files (per-sentence index, NSP sample maps), built once and shared by the
    ranks of a node; "" = DATA/cache when the data folder is writable, else RUN/data_cache."""

    def __post_init__(self) -> None:
        check_non_negative(self, "synthetic_vocab")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ConfigError(f"--eval-fraction must lie in (0, 1), got {self.eval_fraction!r}")


@dataclass
class ObjectiveSection:
    objective: str = "mlm+nsp"
    """What the samples and heads learn: 'mlm+nsp' (BERT: sentence pairs, NotNext B from another document half the
    time, 2-way NSP head on [CLS]), 'mlm+sop' (ALBERT's sentence-order prediction: consecutive segments of one
    document, swapped half the time, 2-way head on [CLS]) or 'mlm' (RoBERTa's FULL-SENTENCES: text packed into
    full sequences across document boundaries, no sentence head; exports as BertForMaskedLM)."""
    short_seq_prob: float = 0.1
    """Share of sentence-pair samples that target a random shorter length, randint(2, max) (BERT's 0.1, against the
    pretrain/finetune length mismatch); mlm+nsp and mlm+sop only: MLM-only sequences are always full."""

    def __post_init__(self) -> None:
        check_choice(self, "objective", OBJECTIVES)
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise ConfigError(f"--short-seq-prob must lie in [0, 1], got {self.short_seq_prob!r}")
        default = ObjectiveSection.__dataclass_fields__["short_seq_prob"].default
        if self.objective == "mlm" and self.short_seq_prob != default:
            raise ConfigError(f"--short-seq-prob {self.short_seq_prob} has no effect with --objective mlm (its "
                              f"sequences are always full); leave it out, or choose --objective mlm+nsp or mlm+sop")

    @property
    def sentence_task(self) -> str | None:
        """'nsp', 'sop' or None (MLM only): the name of the 2-way [CLS] task in metrics."""
        return {"mlm+nsp": "nsp", "mlm+sop": "sop", "mlm": None}[self.objective]


@dataclass
class ModelSection:
    preset: str = "tiny"
    """Model preset: tiny, minilm-l6, bert-base, bert-large (engine/config/model.py)."""
    model_overrides: dict = field(default_factory=dict)
    """ModelConfig fields changed from the preset (e.g. {'num_hidden_layers': 4}); vocab_size comes from the data.
    Flag: --model FIELD=VALUE (repeatable)."""
    dropout: float | None = None
    """Hidden and attention dropout; None = the preset's (0.1)."""
    init_from: str = ""
    """Start from these weights: a Hugging Face directory or one of our checkpoint directories (phase 2 of the
    two-phase recipe starts from phase 1's). Optimizer and schedule start fresh."""

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(unknown_preset(self.preset))
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout must lie in [0, 1), got {self.dropout!r}")
        if not isinstance(self.model_overrides, dict):
            raise ConfigError(f"model_overrides must be a dict of ModelConfig fields, got {self.model_overrides!r}")


@dataclass
class BatchSection:
    max_seq_length: int = 128
    """Tokens per sequence (the NSP pair [CLS] A [SEP] B [SEP] is at most this long)."""
    micro_batch: int = 32
    """Sequences per forward/backward on one rank."""
    global_batch: int = 32
    """Sequences per optimizer step over all ranks; gradient accumulation = global / (micro x ranks)."""
    steps: int = 1000
    """Optimizer steps to run (ignored when token_budget is set)."""
    token_budget: int = 0
    """Train on this many tokens (max_seq_length x global_batch per step), rounded up to whole steps; 0 = use
    steps. Flag: --tokens."""
    unpadded: bool = False
    """Feed the unpadded (total,) + cu_seqlens layout instead of padded (B, S) batches."""
    pack: bool = False
    """Pack several short samples into each row of max_seq_length tokens (needs --unpadded; attention never crosses
    samples). Cuts padding from ~26% to ~9% on the Wikipedia extracts at 128 tokens."""
    prefetch: int = 2
    """Batches built ahead by a background thread (pinned memory on CUDA); 0 = build each batch in the step."""

    def __post_init__(self) -> None:
        check_positive_int(self, "max_seq_length", "micro_batch", "global_batch", "steps")
        check_non_negative(self, "token_budget", "prefetch")
        if self.global_batch % self.micro_batch:
            raise ConfigError(f"--global-batch ({self.global_batch}) must be a multiple of --micro-batch "
                              f"({self.micro_batch})")
        if self.pack and not self.unpadded:
            raise ConfigError("--pack needs --unpadded (packed rows hold several samples; a padded mask cannot "
                              "keep them apart)")


@dataclass
class OptimSection:
    optimizer: str = "adamw"
    """'adamw' (torch) or 'lamb' (engine/optim.Lamb; our own, it also runs on CPU; under ZeRO 1-3 its trust ratios
    are taken per parameter over the partitions and ranks)."""
    lr: float = 1e-3
    """Peak learning rate (after warmup)."""
    warmup_steps: int = -1
    """Linear warmup steps; -1 = warmup_ratio x total steps."""
    warmup_ratio: float = 0.06
    """Warmup as a fraction of the total steps when warmup_steps is -1."""
    decay: str = "poly"
    """Decay after warmup: 'poly' (BERT: (1 - progress) ** decay_power), 'linear', 'cosine' or 'constant'.
    Hugging Face's lr_scheduler_type names are accepted: 'polynomial' = 'poly', 'constant_with_warmup' = 'constant'
    (HF's 'constant', without warmup, is 'constant' with --warmup-steps 0)."""
    decay_power: float = 1.0
    """Power of the polynomial decay (1.0 = BERT's)."""
    weight_decay: float = 0.01
    """Decoupled weight decay; never applied to biases or LayerNorm parameters."""
    betas: tuple = (0.9, 0.999)
    """Adam/LAMB moment coefficients. Flag: --betas B1,B2."""
    eps: float = 1e-6
    """Adam/LAMB epsilon (BERT's 1e-6)."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this value; 0 = no clipping."""

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        check_choice(self, "optimizer", OPTIMIZERS)
        self.decay = HF_SCHEDULES.get(self.decay, self.decay)
        check_choice(self, "decay", DECAYS)
        check_non_negative(self, "weight_decay", "max_grad_norm")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"--warmup-ratio must lie in [0, 1), got {self.warmup_ratio!r}")
        if self.warmup_steps < -1:
            raise ConfigError(f"--warmup-steps must be >= 0 (or -1 for --warmup-ratio), got {self.warmup_steps}")
        if len(self.betas) != 2 or not (0 <= self.betas[0] < 1 and 0 <= self.betas[1] < 1) or not self.eps > 0:
            raise ConfigError(f"--betas must be two values in [0, 1) and --eps be > 0, got {self.betas}, {self.eps}")


@dataclass
class MaskingSection:
    mlm_probability: float = 0.15
    """Fraction of tokens masked for MLM (of those: 80% [MASK] / 10% random / 10% kept). 0.15 is the BERT / RoBERTa
    recipe; 0.30 is MosaicBERT's and ModernBERT's (better downstream at base size, with --objective mlm)."""
    random_replacement: str = "unigram"
    """Token drawn for the 10% 'random' share of masked positions: 'unigram' (corpus frequency) or 'uniform'."""
    whole_word_masking: bool = False
    """Mask all sub-words of a word together (needs --tokenizer; host masking only)."""
    masking: str = "host"
    """Where MLM masking runs: 'host' (the loader, numpy; exactly round(p x n) tokens per sequence, whole-word
    option) or 'device' (in the step on the accelerator, engine/training/device_masking.py; the Triton kernel with
    --kernels triton; each token chosen independently with --mlm-probability)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.mlm_probability < 1.0:
            raise ConfigError(f"--mlm-probability must lie in (0, 1), got {self.mlm_probability!r}")
        check_choice(self, "random_replacement", RANDOM_REPLACEMENTS)
        check_choice(self, "masking", MASKING_PLACES)
        if self.masking == "device" and self.whole_word_masking:
            raise ConfigError("--whole-word-masking runs on the host only; drop it or use --masking host")


@dataclass
class RunSection:
    output_dir: str = "runs/pretrain"
    """Run directory: checkpoints/, metrics.jsonl, tensorboard/ (and wandb/, mlruns/: --report-to), config.json,
    final HF export in hf/."""
    seed: int = 1234
    """Seed of initialisation, dropout, NSP pairing and masking."""
    threads: int = 0
    """torch intra-op CPU threads; 0 = torch's default."""
    resume: bool = False
    """Continue from the newest checkpoint in output_dir/checkpoints whose files verify (damaged ones are set aside
    with one line; error if there is none), on any number of ranks with the same global batch. A resume must match the
    checkpoint's data, objective, model, global batch and schedule (engine/train/resume.py; each difference is one
    line naming the setting and both values); a finished run resumed is a no-op that says so."""
    extend_steps: int = 0
    """With --resume: train the run on to this new total of optimizer steps (larger than its --steps / --tokens, or
    than an earlier extension's total), the one deliberate change a resume may make. Keep the run's own --steps /
    --tokens. The schedule is recomputed for the new total: the warmup stays the run's (the same number of steps),
    the decay is stretched to end at the new total, i.e. lr(step) is the schedule of a run planned for N steps with
    that warmup, from the checkpoint's step on (never a step at the finished run's rate 0). RUN/config.json keeps
    the planned settings and lists each extension under "extended" (step, from_steps, to_steps). 0 = none."""
    save_every: int = 500
    """Checkpoint every N optimizer steps (and always at the end); 0 = only at the end."""
    keep_last: int = 3
    """Checkpoints kept; older ones are deleted after a newer one is complete."""
    log_every: int = 10
    """Write a metrics line (metrics.jsonl and each --report-to tracker) every N steps."""
    report_to: tuple[str, ...] = DEFAULT_REPORT_TO
    """Where the metrics records go besides RUN/metrics.jsonl (Hugging Face's report_to), comma-separated: jsonl
    (metrics.jsonl: always written; `bertforge plot` and the model card read it), tensorboard
    (RUN/tensorboard/; the default's is skipped with one line when tensorboard is not installed), wandb (Weights &
    Biases: offline run files in RUN/wandb/ unless WANDB_MODE is set), mlflow (a local file store in RUN/mlruns/
    unless MLFLOW_TRACKING_URI is set); 'all': each of them that is installed; 'none': metrics.jsonl only. wandb and
    mlflow: pip install 'bertforge[tracking]'."""
    eval_every: int = 200
    """Evaluate on the held-out split every N steps (and at the end); 0 = only at the end."""
    eval_samples: int = 640
    """Held-out samples per evaluation (Hugging Face's max_eval_samples): the first N of the held-out split (all of
    it when smaller), the same masked samples for any --micro-batch, number of ranks and --masking; shared out over
    the ranks in micro batches. A blend scores N of each dataset."""
    progress: bool = True
    """A progress bar on rank 0 when stderr is a terminal, else (a log file) a plain progress line every 30 s;
    --no-progress: the plain lines on a terminal too."""
    export_hf: bool = True
    """Export the final weights to output_dir/hf (Hugging Face format) at the end. Flag: --no-export-hf."""
    final_checkpoint: bool = True
    """Save a checkpoint at the end (besides every save_every steps). Flag: --no-final-checkpoint (a throughput run
    that keeps nothing; needs --no-export-hf, which exports from it)."""
    peak_flops: float = 0.0
    """Peak FLOP/s of one accelerator for the logged MFU (e.g. 756e12 for an H100 PCIe in bf16); 0 = look the
    device's exact name up in engine/training/metrics.PEAK_FLOPS (no MFU for a name not listed)."""
    profile_steps: int = 0
    """Profile this many optimizer steps with torch.profiler: RUN/profile.json (device busy/idle share, top ops) and
    RUN/profile/trace.json; 0 = off."""
    profile_start: int = -1
    """Optimizer steps done before the profiled window opens; -1 = log_every (past autotuning and warm-up)."""

    def __post_init__(self) -> None:
        check_positive_int(self, "log_every", "keep_last", "eval_samples")
        self.report_to = check_report_to(self.report_to)
        check_non_negative(self, "save_every", "eval_every", "profile_steps", "peak_flops", "extend_steps", "threads")
        if self.extend_steps and not self.resume:
            raise ConfigError(f"--extend-steps {self.extend_steps} lengthens a run being resumed; add --resume (and "
                              f"the run's --output-dir), or give a new run its length with --steps")
        if self.profile_start < -1:
            raise ConfigError(f"--profile-start must be >= -1, got {self.profile_start}")
        if self.export_hf and not self.final_checkpoint:
            raise ConfigError("--no-final-checkpoint: the Hugging Face export at the end reads the final checkpoint; "
                              "add --no-export-hf")


SECTIONS: dict[str, type] = {"data": DataSection, "objective": ObjectiveSection, "model": ModelSection,
                             "batch": BatchSection, "optim": OptimSection, "masking": MaskingSection,
                             "parallel": ParallelConfig, "run": RunSection}


@dataclass
class PretrainConfig:
    data: DataSection = field(default_factory=DataSection)
    """What to train on: the prepared dataset, its tokenizer, the held-out share."""
    objective: ObjectiveSection = field(default_factory=ObjectiveSection)
    """Pretraining objective: MLM with NSP, with SOP, or alone; short sequences of the pair objectives."""
    model: ModelSection = field(default_factory=ModelSection)
    """The encoder: preset, field overrides, dropout, starting weights."""
    batch: BatchSection = field(default_factory=BatchSection)
    """Batch geometry and length of the run; layout (padded / unpadded / packed) and prefetching."""
    optim: OptimSection = field(default_factory=OptimSection)
    """Optimizer, learning-rate schedule, weight decay, clipping."""
    masking: MaskingSection = field(default_factory=MaskingSection)
    """MLM masking: rate, replacements, whole words, host or device."""
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """Precision and distribution: bf16/fp16, ZeRO, kernels, compile, activation checkpointing."""
    run: RunSection = field(default_factory=RunSection)
    """Outputs, seed, checkpoints, logging, evaluation, profiling."""

    def __post_init__(self) -> None:
        if self.masking.whole_word_masking and not self.data.tokenizer:
            raise ConfigError("--whole-word-masking needs --tokenizer (to know the '##' continuation pieces)")
        planned = self.planned_steps()
        if self.run.extend_steps and self.run.extend_steps <= planned:
            raise ConfigError(f"--extend-steps {self.run.extend_steps} must be larger than the run's planned total of "
                              f"{planned} steps (--steps / --tokens); it is the new total, not a number of steps to "
                              f"add")
        length = self.batch.max_seq_length  # before any data is read: the model's positions need no vocabulary
        self.positions().check_seq_length(length, model=f"--preset {self.model.preset}",
                                          other=f"or a longer position table: --model max_position_embeddings={length}")

    # ---- flat view: one name per field, the flags' and checkpoints' form ------------------------------------------
    @classmethod
    def field_section(cls) -> dict[str, str]:
        """{field name: section name} over all sections."""
        return {f.name: section for section, kind in SECTIONS.items() for f in dataclasses.fields(kind)}

    @classmethod
    def from_flat(cls, values: dict | None = None, **more: Any) -> "PretrainConfig":
        """Build from `{field: value}` (fields of any section); unknown names raise ConfigError naming them."""
        values = {**(values or {}), **more}
        where = cls.field_section()
        unknown = sorted(set(values) - set(where))
        for name in unknown:
            if name in REPLACED:
                raise ConfigError(replaced_setting(name, values))
        if unknown:
            raise ConfigError(f"unknown pretraining setting(s): {', '.join(unknown)}")
        parts: dict[str, dict] = {section: {} for section in SECTIONS}
        for name, value in values.items():
            parts[where[name]][name] = value
        return cls(**{section: SECTIONS[section](**kw) for section, kw in parts.items()})

    def to_flat(self) -> dict:
        """`{field: value}` over all sections (JSON-ready: tuples become lists)."""
        out = {}
        for section in SECTIONS:
            out.update(dataclasses.asdict(getattr(self, section)))
        return out

    def replace(self, **changes: Any) -> "PretrainConfig":
        """A copy with some fields (of any section) changed, validated again."""
        return self.from_flat({**self.to_flat(), **changes})

    # ---- derived ----------------------------------------------------------------------------------------------
    def positions(self) -> ModelConfig:
        """The preset with the --model max_position_embeddings override alone: the model's sequence limit, known
        before the data (whose tokenizer sets the vocabulary) is opened."""
        given = self.model.model_overrides.get("max_position_embeddings")
        return preset(self.model.preset, **({"max_position_embeddings": given} if given is not None else {}))

    def grad_accum(self, world_size: int) -> int:
        """Micro batches per rank per optimizer step; the global batch must split evenly over the ranks."""
        per_step = self.batch.micro_batch * world_size
        if self.batch.global_batch % per_step:
            raise ConfigError(f"--global-batch ({self.batch.global_batch}) is not divisible by --micro-batch "
                              f"({self.batch.micro_batch}) x ranks ({world_size}) = {per_step}")
        return self.batch.global_batch // per_step

    def planned_steps(self) -> int:
        """Optimizer steps the run was planned for: from the token budget when one is set, else `steps`."""
        if self.batch.token_budget:
            per_step = self.batch.max_seq_length * self.batch.global_batch
            return max(1, -(-self.batch.token_budget // per_step))
        return self.batch.steps

    def total_steps(self) -> int:
        """Optimizer steps of the run: --extend-steps when the run is extended, else the planned steps; the end
        of the learning-rate decay."""
        return self.run.extend_steps or self.planned_steps()

    def warmup(self) -> int:
        """Warmup steps: warmup_steps, or warmup_ratio of the planned steps when it is -1 (never more than them);
        an extension keeps the planned run's warmup."""
        total = self.planned_steps()
        o = self.optim
        return min(total, o.warmup_steps if o.warmup_steps >= 0 else int(o.warmup_ratio * total))
