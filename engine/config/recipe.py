"""The finetuning recipe chosen from the data: `choose_recipe(n_train, label_counts)` is a pure function of the
training-set size and its label distribution (nothing else: no model, no clock, no randomness), and
`Recipe.apply(training)` fills the FinetuneConfig fields the user left unset (None) with it; for classification,
`Recipe.classify_choices` does the same for --class-weight, --pooling and --metric left at 'auto'.

Large sets (>= SMALL_SET: 1,000 training examples, or 500 sentences for ner) get the lecture's recipe: lr 2e-5, the
epochs asked for (3), 10% warmup, no step floor, one learning rate for all layers and the head, no
re-initialisation, plain cross-entropy, [CLS] pooling, the best dev state by accuracy.
Small sets get the few-sample recipe of Mosbach et al. 2021 ("On the Stability of Fine-tuning BERT") and Zhang et
al. 2021 ("Revisiting Few-sample BERT Fine-tuning"):
- at least MIN_STEPS_SMALL optimizer steps (epochs count data passes: 600 examples at batch 32 are 19 steps a pass,
  so 3 epochs give 57 updates, too few for Adam to leave the pretrained optimum's neighbourhood stably);
- lr 5e-5 (the top of the lecture's 2e-5 ... 5e-5) with layer-wise decay 0.9 (ELECTRA, Clark et al. 2020;
  DeBERTa): encoder layer l (0-based) of L at 5e-5 x 0.9^(L - l), the embeddings lowest;
- the randomly initialised head at HEAD_LR_SCALE_SMALL x lr (1e-3; discriminative learning rates, Howard & Ruder
  2018): at 5e-5 a fresh linear head moves each weight by at most ~5e-5 a step, so in 150 steps its logits barely
  leave zero and the encoder alone has to carry the fit;
- classify: mean pooling of the real tokens' states (no pooler to adapt: the sentence vector on which a frozen
  encoder plus logistic regression is already a strong baseline; Reimers & Gurevych 2019);
- classify: balanced class weights (scikit-learn's n / (classes x n_c)) and the best dev state by macro-F1 when the
  majority class has at least SKEW_RATIO times the examples of the rarest (ner's 'O' majority is scored by entity
  F1, not per tag);
- no re-initialisation of top layers by default (Zhang et al. found it helps BERT-base on < 1k examples; it is
  not measured here, so it stays opt-in: --reinit-layers K).
The warmup is --warmup-ratio of all the steps, the floor included. Every choice is a flag; a given flag wins."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

from bertforge.config.checks import invalid_choice
from bertforge.errors import ConfigError

SMALL_SET = {"classify": 1000, "ner": 500}  # training examples / sentences below which the few-sample recipe is used
# (a sentence carries ~15 labelled words: WNUT-16's 958-sentence training part keeps the lecture's recipe)
MIN_STEPS_SMALL = 150  # ~8 passes over 600 examples at batch 32
LR_LECTURE, LR_SMALL = 2e-5, 5e-5
LAYER_LR_DECAY_SMALL = 0.9
HEAD_LR_SCALE_SMALL = 20.0  # the head at 1e-3 while the encoder's top layer trains at 5e-5 x 0.9
SKEW_RATIO = 2.0  # majority / rarest class count at which a small set gets balanced class weights
RECIPES = ("auto", "lecture")
TRAINING_FIELDS = ("lr", "min_steps", "layer_lr_decay", "head_lr_scale", "reinit_layers")  # FinetuneConfig's
CLASSIFY_FIELDS = ("class_weight", "pooling", "metric")  # ClassifyData's ('auto' = chosen here)


@dataclass(frozen=True)
class Recipe:
    """The values chosen for the unset fields, and why (one line each)."""

    kind: str  # 'small' (few-sample recipe) or 'lecture'
    lr: float
    min_steps: int
    layer_lr_decay: float
    head_lr_scale: float
    reinit_layers: int
    class_weight: str  # 'none' or 'balanced' (classify)
    pooling: str  # 'cls' or 'mean' (classify)
    metric: str  # dev metric that picks the best state: 'accuracy' or 'macro_f1' (classify)
    why: tuple[str, ...]

    def apply(self, training):
        """`training` (a FinetuneConfig) with its unset (None) recipe fields set to this recipe's values."""
        chosen = {name: getattr(self, name) for name in TRAINING_FIELDS
                  if getattr(training, name) is None}
        return dataclasses.replace(training, **chosen)

    def describe(self, training, classify: dict | None = None, steps: int | None = None) -> str:
        """The lines printed before training: each setting with 'chosen' (and why) or 'given' (a flag).
        `training`: the FinetuneConfig as the user gave it (None = unset); `classify`: the user's --class-weight,
        --pooling and --metric by field name ('auto' = unset; None: not a classification run); `steps`: the
        optimizer steps the epochs alone give."""
        rows = [(name, getattr(training, name), getattr(self, name)) for name in TRAINING_FIELDS]
        for name in CLASSIFY_FIELDS if classify is not None else ():
            rows.append((name, None if classify[name] == "auto" else classify[name], getattr(self, name)))
        head = "few-sample recipe" if self.kind == "small" else "lecture recipe"
        lines = [f"recipe: {head} ({'; '.join(self.why)})"]
        for name, given, chosen in rows:
            lines.append(f"  --{name.replace('_', '-')} {given if given is not None else chosen} "
                         f"({'given' if given is not None else 'chosen'})")
        floor = training.min_steps if training.min_steps is not None else self.min_steps
        if steps is not None:
            total = max(steps, floor)
            lines.append(f"  steps: {total} ({steps} from --epochs {training.epochs:g}"
                         + (f", raised to the --min-steps floor" if floor > steps else "")
                         + f"); warmup {training.warmup_ratio:g} of them = {int(training.warmup_ratio * total)}")
        return "\n".join(lines)

    def classify_choices(self, given: dict) -> dict:
        """The classification settings to use: each of `given` (--class-weight, --pooling, --metric by field
        name) unless it is 'auto', then this recipe's."""
        return {name: getattr(self, name) if given[name] == "auto" else given[name] for name in CLASSIFY_FIELDS}


def lecture() -> Recipe:
    """The lecture's recipe (any set size)."""
    return Recipe("lecture", LR_LECTURE, 0, 1.0, 1.0, 0, "none", "cls", "accuracy",
                  ("the lecture's: lr 2e-5, the epochs asked for",))


def choose_recipe(n_train: int, label_counts: Sequence[int] | None = None, recipe: str = "auto",
                  task: str = "classify") -> Recipe:
    """The recipe for a training set of `n_train` examples (task 'classify') or sentences ('ner') whose label
    counts are `label_counts` (classify; None for ner). recipe='lecture' forces the lecture's. Pure: same inputs,
    same Recipe. ConfigError on a negative size or an unknown recipe / task."""
    if recipe not in RECIPES:
        raise ConfigError(invalid_choice("--recipe", recipe, RECIPES))
    if not isinstance(n_train, int) or n_train < 0:
        raise ConfigError(f"training-set size must be a non-negative integer, got {n_train!r}")
    if task not in SMALL_SET:
        raise ConfigError(f"no recipe for task {task!r}; choose {' or '.join(SMALL_SET)}")
    if recipe == "lecture":
        return lecture()
    unit, small = ("examples" if task == "classify" else "sentences"), SMALL_SET[task]
    if n_train >= small:
        base = lecture()
        return dataclasses.replace(base, why=(f"{n_train} training {unit} >= {small}",) + base.why)
    counts = [c for c in (label_counts or ()) if c > 0]
    skew = max(counts) / min(counts) if len(counts) >= 2 else 1.0
    skewed = label_counts is not None and skew >= SKEW_RATIO
    weight, metric = ("balanced", "macro_f1") if skewed else ("none", "accuracy")
    why = (f"{n_train} training {unit} < {small}",
           f"at least {MIN_STEPS_SMALL} updates (Mosbach et al. 2021), lr {LR_SMALL:g} with layer-wise decay "
           f"{LAYER_LR_DECAY_SMALL:g} (ELECTRA), the fresh head at {HEAD_LR_SCALE_SMALL:g}x")
    if label_counts is not None:
        why += ("mean pooling (the sentence vector a frozen encoder already separates: Reimers & Gurevych 2019)",
                f"majority / rarest class = {skew:.2f} {'>=' if skewed else '<'} {SKEW_RATIO:g}: class weights "
                f"{weight}, best state by dev {metric}")
    return Recipe("small", LR_SMALL, MIN_STEPS_SMALL, LAYER_LR_DECAY_SMALL, HEAD_LR_SCALE_SMALL, 0, weight,
                  "mean", metric, why)
