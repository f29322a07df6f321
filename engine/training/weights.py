"""Weights in and out of training checkpoints: start a phase from earlier weights (one of our checkpoints or a
Hugging Face directory), rebuild a model from a checkpoint (any ZeRO stage), export one to Hugging Face format or to
a single consolidated fp32 file. The model class follows the objective: BertForPreTraining (NSP or SOP head) or
BertForMaskedLM (MLM only)."""
from __future__ import annotations

from pathlib import Path

import torch

from bertforge import deepspeed as ds
from bertforge.config import ModelConfig
from bertforge.errors import ConfigError
from bertforge.heads import BertForMaskedLM, BertForPreTraining
from bertforge.hf import TIED_OPTIONAL, architecture_of, export_hf, fuse_qkv, load_pretrained, read_config
from bertforge.io import atomic_file
from bertforge.model_card import pretrain_card
from bertforge.train.checkpoint import checkpoint_meta, is_checkpoint, resolve_checkpoint


def pretraining_model(model_cfg: ModelConfig, objective: str) -> BertForPreTraining | BertForMaskedLM:
    """The model of an objective ('mlm+nsp' / 'mlm+sop': MLM + the 2-way [CLS] head; 'mlm': MLM alone)."""
    return BertForMaskedLM(model_cfg) if objective == "mlm" else BertForPreTraining(model_cfg)


def checkpoint_objective(ckpt_dir: Path) -> str:
    """The objective a checkpoint was trained with ('mlm+nsp' for checkpoints from before objectives existed)."""
    return checkpoint_meta(ckpt_dir)["train_config"].get("objective", "mlm+nsp")


def consolidated_state_dict(ckpt_dir: str | Path) -> dict[str, torch.Tensor]:
    return ds.consolidated_fp32_state_dict(ckpt_dir)


def load_model_from_checkpoint(ckpt_dir: str | Path) -> BertForPreTraining | BertForMaskedLM:
    """A CPU fp32 model of the checkpoint's objective holding its weights (gathered from ZeRO shards)."""
    ckpt_dir = resolve_checkpoint(ckpt_dir)
    model_cfg = ModelConfig(**checkpoint_meta(ckpt_dir)["model_config"])
    model = pretraining_model(model_cfg, checkpoint_objective(ckpt_dir))
    _load_state(model, consolidated_state_dict(ckpt_dir), str(ckpt_dir))
    return model


def _load_state(model: torch.nn.Module, state: dict, source: str) -> None:
    """Copy a consolidated state into model; checkpoints written before the fused QKV projection (separate
    query / key / value) are fused on the way in."""
    result = model.load_state_dict(fuse_qkv(state), strict=False)
    missing = [k for k in result.missing_keys if k not in TIED_OPTIONAL]
    if missing or result.unexpected_keys:
        raise ConfigError(f"{source}: weights do not fit the model (missing {missing[:3]}, unexpected "
                          f"{result.unexpected_keys[:3]})")


def load_initial_weights(model: BertForPreTraining | BertForMaskedLM, path: str | Path) -> None:
    """Phase 2 of the two-phase recipe (or any warm start): copy weights from one of our checkpoints / run
    directories, or from a Hugging Face directory; the vocabularies must agree."""
    path = Path(path)
    vocab = model.config.vocab_size
    if (path / "config.json").is_file() and not is_checkpoint(path) and not (path / "checkpoints").is_dir():
        theirs = read_config(path)
        if theirs.vocab_size != vocab:
            raise ConfigError(f"{path}: vocab_size {theirs.vocab_size} does not match the dataset's tokenizer "
                              f"({vocab} tokens)")
        load_pretrained(path, model)
        return
    ckpt_dir = resolve_checkpoint(path)
    theirs = checkpoint_meta(ckpt_dir)["model_config"]["vocab_size"]
    if theirs != vocab:
        raise ConfigError(f"{ckpt_dir}: vocab_size {theirs} does not match the dataset's tokenizer ({vocab} tokens)")
    _load_state(model, consolidated_state_dict(ckpt_dir), str(ckpt_dir))


def export_checkpoint(ckpt_dir: str | Path, out_dir: str | Path, tokenizer_dir: str | Path | None = None) -> Path:
    """Checkpoint -> Hugging Face directory (config.json, model.safetensors, tokenizer files when known):
    BertForPreTraining (the NSP or SOP head in cls.seq_relationship) or BertForMaskedLM (MLM only); config.json
    records the objective as `pretraining_objective`."""
    ckpt_dir = resolve_checkpoint(ckpt_dir)
    model = load_model_from_checkpoint(ckpt_dir)
    tokenizer_dir = tokenizer_dir or checkpoint_meta(ckpt_dir).get("tokenizer_dir")
    if tokenizer_dir and not any((Path(tokenizer_dir) / n).is_file() for n in ("vocab.txt", "tokenizer.json")):
        tokenizer_dir = None
    meta = checkpoint_meta(ckpt_dir)
    return export_hf(model, out_dir, tokenizer_dir=tokenizer_dir,
                     config_extra={"pretraining_objective": checkpoint_objective(ckpt_dir)},
                     max_length=meta.get("train_config", {}).get("max_seq_length"),
                     card=pretrain_card(architecture_of(model), meta.get("train_config", {}), int(meta.get("step", 0)),
                                        *_card_inputs(ckpt_dir, meta)))


def _card_inputs(ckpt_dir: Path, meta: dict) -> tuple[dict | None, dict | None]:
    """(the dataset's meta.json, the last held-out record of the run's metrics.jsonl) for the model card; None
    where the file is gone (a checkpoint copied elsewhere)."""
    import json

    data_dir, data = meta.get("train_config", {}).get("data_dir"), None
    if data_dir and (Path(data_dir) / "meta.json").is_file():
        data = json.loads((Path(data_dir) / "meta.json").read_text(encoding="utf-8"))
    metrics, held_out = Path(ckpt_dir).parent.parent / "metrics.jsonl", None
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("split") == "eval" and record.get("step", -1) <= meta.get("step", 0):
                held_out = record
    return data, held_out


def export_fp32(ckpt_dir: str | Path, out_file: str | Path) -> Path:
    """Checkpoint -> one consolidated fp32 file (.safetensors or .pt by suffix), written atomically."""
    ckpt_dir = resolve_checkpoint(ckpt_dir)
    state = consolidated_state_dict(ckpt_dir)
    unique = {}
    for k, v in state.items():  # safetensors refuses shared storage: keep tied tensors once
        if k in TIED_OPTIONAL:
            continue
        unique[k] = v.detach().contiguous().clone()
    out_file = Path(out_file)
    if out_file.suffix == ".safetensors":
        from safetensors.torch import save

        data = save(unique, metadata={"format": "pt"})
        with atomic_file(out_file, "wb") as fh:
            fh.write(data)
    else:
        with atomic_file(out_file, "wb") as fh:
            torch.save(unique, fh)
    return out_file
