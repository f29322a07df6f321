"""`TrainConfig`: every knob of `bertforge pretrain`, typed, with a docstring per field and validation in
`__post_init__`. The model's shape is a `ModelConfig` preset (engine/config.py); DeepSpeed's JSON is generated from
both (engine/deepspeed.py). Derived quantities (gradient accumulation, total steps from a token budget) are methods so
that they depend on the world size, which is only known at launch."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from engine.config import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16")
OPTIMIZERS = ("adamw", "lamb")
DECAYS = ("linear", "poly", "cosine", "constant")


@dataclass
class TrainConfig:
    # ---- what to train on, where to write ------------------------------------------------------------------
    data_dir: str = ""
    """Prepared dataset directory (`bertforge prepare` output: shards + its tokenizer)."""
    tokenizer: str = ""
    """Tokenizer directory the dataset was prepared with (checked against the dataset's tokenizer hash; its files go
    into the Hugging Face export)."""
    eval_fraction: float = 0.05
    """Fraction of the dataset's documents held out for evaluation (chosen by document hash, stable)."""
    output_dir: str = "runs/pretrain"
    """Run directory: checkpoints/, metrics.jsonl, tensorboard/, config.json, final HF export in hf/."""
    preset: str = "tiny"
    """Model preset: tiny, minilm-l6, bert-base, bert-large (engine/config.py)."""
    model_overrides: dict = field(default_factory=dict)
    """ModelConfig fields changed from the preset (e.g. {'num_hidden_layers': 4}); vocab_size comes from the data."""
    init_from: str = ""
    """Start from these weights: a Hugging Face directory or one of our checkpoint directories (phase 2 of the
    two-phase recipe starts from phase 1's). Optimizer and schedule start fresh."""

    # ---- batch geometry ------------------------------------------------------------------------------------
    seq_len: int = 128
    """Tokens per sequence (the NSP pair [CLS] A [SEP] B [SEP] is at most this long)."""
    micro_batch: int = 32
    """Sequences per forward/backward on one rank."""
    global_batch: int = 32
    """Sequences per optimizer step over all ranks; accumulation = global / (micro x world)."""
    steps: int = 1000
    """Optimizer steps to run (ignored when token_budget is set)."""
    token_budget: int = 0
    """Train on this many tokens (seq_len x global_batch per step), rounded up to whole steps; 0 = use steps."""

    # ---- optimisation --------------------------------------------------------------------------------------
    optimizer: str = "adamw"
    """'adamw' (torch) or 'lamb' (engine/optim.Lamb; our own, it also runs on CPU)."""
    lr: float = 1e-3
    """Peak learning rate (after warmup)."""
    warmup_steps: int = -1
    """Linear warmup steps; -1 = warmup_ratio x total steps."""
    warmup_ratio: float = 0.06
    """Warmup as a fraction of the total steps when warmup_steps is -1."""
    decay: str = "poly"
    """Decay after warmup: 'poly' (BERT: (1 - progress) ** decay_power), 'linear', 'cosine' or 'constant'."""
    decay_power: float = 1.0
    """Power of the polynomial decay (1.0 = BERT's)."""
    weight_decay: float = 0.01
    """Decoupled weight decay; never applied to biases or LayerNorm parameters."""
    betas: tuple = (0.9, 0.999)
    """Adam/LAMB moment coefficients."""
    eps: float = 1e-6
    """Adam/LAMB epsilon (BERT's 1e-6)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value; 0 = no clipping."""
    dropout: float | None = None
    """Hidden and attention dropout; None = the preset's (0.1)."""
    seed: int = 1234
    """Seed of initialisation, dropout, NSP pairing and masking."""
    mlm_probability: float = 0.15
    """Fraction of tokens masked (80% [MASK] / 10% random / 10% kept)."""

    # ---- numerics and distribution -------------------------------------------------------------------------
    precision: str = "fp32"
    """'fp32', 'bf16' or 'fp16' (dynamic loss scaling; GPU only)."""
    zero_stage: int = 0
    """DeepSpeed ZeRO stage 0-3."""
    deepspeed_config: str = ""
    """A user's DeepSpeed JSON; it wins where it speaks, unless it contradicts an explicit flag (error)."""
    kernels: str = "none"
    """'none' (pure torch) or 'triton' (kernels/ package, GPU)."""
    unpadded: bool = False
    """Feed the unpadded (total,) + cu_seqlens layout instead of padded (B, S) batches."""
    pack: bool = False
    """Pack several short samples into each row of seq_len tokens (needs --unpadded; attention never crosses
    samples). Cuts padding from ~26% to ~9% on the Wikipedia extracts at 128 tokens."""
    masking: str = "host"
    """Where MLM masking runs: 'host' (the loader, numpy; exactly round(p x n) tokens per sequence, whole-word
    option) or 'device' (in the step on the accelerator, engine/training/device_masking.py; the Triton kernel with
    --kernels triton; each token chosen independently with --mlm-probability)."""
    prefetch: int = 2
    """Batches built ahead by a background thread (pinned memory on CUDA); 0 = build each batch in the step."""
    compile: bool = False
    """torch.compile the model's forward (dynamic shapes; the Triton kernels are custom ops it traces through).
    ZeRO 0-2 only."""
    profile_steps: int = 0
    """Profile this many optimizer steps with torch.profiler: RUN/profile.json (device busy/idle share, top ops) and
    RUN/profile/trace.json; 0 = off."""
    profile_start: int = -1
    """Optimizer steps done before the profiled window opens; -1 = log_every (past autotuning and warm-up)."""
    dist_timeout_s: int = 600
    """Collective timeout: a rank that dies or hangs takes the job down after this many seconds."""

    # ---- checkpoints, logging, evaluation -------------------------------------------------------------------
    save_every: int = 500
    """Checkpoint every N optimizer steps (and always at the end); 0 = only at the end."""
    keep_last: int = 3
    """Checkpoints kept; older ones are deleted after a newer one is complete."""
    resume: bool = False
    """Continue from the latest complete checkpoint in output_dir/checkpoints (error if there is none)."""
    log_every: int = 10
    """Write a metrics line (JSONL + TensorBoard) every N steps."""
    eval_every: int = 200
    """Evaluate on the held-out split every N steps (and at the end); 0 = only at the end."""
    eval_batches: int = 20
    """Held-out micro batches per evaluation (per rank)."""
    max_skipped_steps: int = 20
    """Stop with an error after this many consecutive steps with a non-finite loss."""
    progress: bool = True
    """Show a tqdm progress bar on rank 0."""
    export_hf: bool = True
    """Export the final weights to output_dir/hf (Hugging Face format) at the end."""
    random_replacement: str = "unigram"
    """Token drawn for the 10% 'random' share of masked positions: 'unigram' (corpus frequency) or 'uniform'."""
    whole_word_masking: bool = False
    """Mask all sub-words of a word together (needs --tokenizer)."""

    def __post_init__(self) -> None:
        def positive(*names):
            for name in names:
                value = getattr(self, name)
                if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                    raise ConfigError(f"--{_flag(name)} must be a positive integer, got {value!r}")

        def non_negative(*names):
            for name in names:
                value = getattr(self, name)
                if not isinstance(value, (int, float)) or value < 0:
                    raise ConfigError(f"--{_flag(name)} must be >= 0, got {value!r}")

        positive("seq_len", "micro_batch", "global_batch", "steps", "log_every", "keep_last", "eval_batches",
                 "max_skipped_steps", "dist_timeout_s")
        non_negative("token_budget", "save_every", "eval_every", "weight_decay", "grad_clip")
        self.betas = tuple(self.betas)
        if self.global_batch % self.micro_batch:
            raise ConfigError(f"--global-batch ({self.global_batch}) must be a multiple of --micro-batch "
                              f"({self.micro_batch})")
        from engine.config import PRESETS

        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; known presets: {', '.join(PRESETS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.decay not in DECAYS:
            raise ConfigError(f"--decay must be one of {', '.join(DECAYS)}, got {self.decay!r}")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"--zero-stage must be 0, 1, 2 or 3, got {self.zero_stage!r}")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"--warmup-ratio must lie in [0, 1), got {self.warmup_ratio!r}")
        if self.warmup_steps < -1:
            raise ConfigError(f"--warmup-steps must be >= 0 (or -1 for --warmup-ratio), got {self.warmup_steps}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout must lie in [0, 1), got {self.dropout!r}")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ConfigError(f"--eval-fraction must lie in (0, 1), got {self.eval_fraction!r}")
        if self.pack and not self.unpadded:
            raise ConfigError("--pack needs --unpadded (packed rows hold several samples; a padded mask cannot "
                              "keep them apart)")
        if self.masking not in ("host", "device"):
            raise ConfigError(f"--masking must be host or device, got {self.masking!r}")
        if self.masking == "device" and self.whole_word_masking:
            raise ConfigError("--whole-word-masking runs on the host only; drop it or use --masking host")
        if self.profile_steps < 0 or self.profile_start < -1:
            raise ConfigError(f"--profile-steps must be >= 0 and --profile-start >= -1, got {self.profile_steps}, "
                              f"{self.profile_start}")
        if self.prefetch < 0:
            raise ConfigError(f"--prefetch must be >= 0, got {self.prefetch!r}")
        if self.compile and self.zero_stage == 3:
            raise ConfigError("--compile is not supported with --zero-stage 3 (ZeRO-3 gathers parameters in "
                              "module hooks that torch.compile does not trace); use ZeRO 0-2")
        if self.random_replacement not in ("unigram", "uniform"):
            raise ConfigError(f"--random-replacement must be unigram or uniform, got {self.random_replacement!r}")
        if not 0.0 < self.mlm_probability < 1.0:
            raise ConfigError(f"--mlm-probability must lie in (0, 1), got {self.mlm_probability!r}")
        if not (0 <= self.betas[0] < 1 and 0 <= self.betas[1] < 1) or not self.eps > 0:
            raise ConfigError(f"--betas must lie in [0, 1) and --eps be > 0, got {self.betas}, {self.eps}")

    # ---- derived -------------------------------------------------------------------------------------------
    def grad_accum(self, world_size: int) -> int:
        """Micro batches per rank per optimizer step; the global batch must split evenly over the ranks."""
        per_step = self.micro_batch * world_size
        if self.global_batch % per_step:
            raise ConfigError(f"--global-batch ({self.global_batch}) is not divisible by --micro-batch "
                              f"({self.micro_batch}) x ranks ({world_size}) = {per_step}")
        return self.global_batch // per_step

    def total_steps(self) -> int:
        if self.token_budget:
            per_step = self.seq_len * self.global_batch
            return max(1, -(-self.token_budget // per_step))
        return self.steps

    def warmup(self) -> int:
        total = self.total_steps()
        return min(total, self.warmup_steps if self.warmup_steps >= 0 else int(self.warmup_ratio * total))

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - names
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s): {', '.join(sorted(unknown))}")
        return cls(**raw)


def field_docs(cls=None) -> dict[str, str]:
    """The docstring under each field of a dataclass (read from its source), for --help."""
    import ast
    import inspect
    import textwrap

    cls = cls or TrainConfig
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split()).replace("%", "%%")
    return docs


def _flag(name: str) -> str:
    return name.replace("_", "-")
