"""Task heads on top of BertModel, with Hugging Face's module names so checkpoints map one-to-one:
  BertForPreTraining              cls.predictions (transform + tied decoder) + cls.seq_relationship (NSP or SOP)
  BertForMaskedLM                 cls.predictions only, no pooler (MLM-only pretraining, RoBERTa-style)
  BertForSequenceClassification   [CLS] -> pooler -> dropout -> classifier (pooling='cls', BERT's), or the mean of
                                  the real tokens' states -> dropout -> classifier (pooling='mean', no pooler: the
                                  sentence-transformers recipe the MiniLM checkpoint was trained with)
  BertForTokenClassification      every position -> dropout -> classifier (no pooler, as in HF)
The MLM head runs only on the masked rows when their flat indices are given (FlashAttention's models/bert.py idea):
at 15% masking that is ~7x less decoder work and memory than logits on every token."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bertforge import ops
from bertforge.config import ModelConfig
from bertforge.kernels.padding import seqlens_of, token_sequence_ids
from bertforge.model import (_GELU_APPROXIMATE, BertModel, TokenLayout, head_dropout_site, init_weights,
                             register_dropout_site)


@dataclass
class PreTrainingOutput:
    loss: torch.Tensor | None = None  # mlm_loss + nsp_loss (those given)
    mlm_loss: torch.Tensor | None = None
    nsp_loss: torch.Tensor | None = None  # the 2-way [CLS] task's (NSP or SOP); None for BertForMaskedLM
    mlm_logits: torch.Tensor | None = None  # (n_masked, V) or (B, S, V) / (total, V); None when the loss was fused
    mlm_predictions: torch.Tensor | None = None  # (n_masked,) argmax ids, when mlm_labels were given
    nsp_logits: torch.Tensor | None = None  # (B, 2); None for BertForMaskedLM


@dataclass
class ClassifierOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor  # (B, C) for sequences, (B, S, C) / (total, C) for tokens


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.approximate = _GELU_APPROXIMATE[config.hidden_act]

    def forward(self, x):
        return self.LayerNorm(F.gelu(self.dense(x), approximate=self.approximate))


class BertLMPredictionHead(nn.Module):
    """transform -> decoder tied to the word embeddings (+ its own bias, HF's `cls.predictions.bias`)."""

    def __init__(self, config: ModelConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.decoder.weight = word_embeddings.weight  # tied (V, h)
        self.decoder.bias = self.bias
        self.backend = config.kernels

    def params_read_in_forward(self) -> list[nn.Parameter]:
        return [self.decoder.weight, self.bias]

    def forward(self, hidden):
        """hidden (..., h) -> logits (..., V)."""
        return F.linear(self.transform(hidden), self.decoder.weight, self.bias)

    def loss(self, hidden, labels):
        """hidden (n, h) masked rows, labels (n,) -> (mean CE, argmax (n,)); full fp32 logits are never kept when
        the Triton backend is on."""
        return ops.masked_lm_loss(self.transform(hidden), self.decoder.weight, self.bias, labels,
                                  backend=self.backend)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config: ModelConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = BertLMPredictionHead(config, word_embeddings)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


def over_items(mean_loss: torch.Tensor, labels: torch.Tensor, num_items_in_batch) -> torch.Tensor:
    """A token-level mean over this micro batch's labelled tokens (labels != -100) -> their summed loss divided by
    `num_items_in_batch`, the labelled tokens of the whole optimizer step (all micro batches, all ranks): the
    Hugging Face Trainer's num_items_in_batch normalisation (transformers 4.46, 2024), so that the accumulated step
    is one mean over the global batch whatever the micro batch. None: the micro batch's own mean (unchanged).
    The count stays on the device (no host sync)."""
    if num_items_in_batch is None:
        return mean_loss
    return mean_loss * ((labels != -100).sum().to(mean_loss.dtype) / num_items_in_batch)


def _masked_rows(input_ids, masked_positions, mlm_labels):
    """-> (masked_positions (n,) or None, mlm_labels aligned with them or None); a full (B, S) / (total,) label
    tensor without positions gives the positions of its labelled (!= -100) tokens."""
    if masked_positions is None and mlm_labels is not None and mlm_labels.shape == input_ids.shape:
        flat = mlm_labels.flatten()
        masked_positions = (flat != -100).nonzero(as_tuple=False).flatten()
        mlm_labels = flat[masked_positions]
    return masked_positions, mlm_labels


def _encode(bert: BertModel, input_ids, token_type_ids, attention_mask, position_ids, cu_seqlens, max_seqlen,
            masked_positions, mlm_labels, cls_positions, dropout_ids):
    """BertModel on the batch, its last layer on the masked rows only when config.last_layer_subset and the masked
    rows are known -> (sequence (B, S, h) / (total, h), or (n, h) already the masked rows; pooled; positions of the
    masked rows in sequence or None when sequence is those rows; labels (n,) or None)."""
    masked_positions, mlm_labels = _masked_rows(input_ids, masked_positions, mlm_labels)
    subset = masked_positions if bert.config.last_layer_subset else None
    sequence, pooled = bert(input_ids, token_type_ids, attention_mask, position_ids, cu_seqlens, max_seqlen,
                            cls_positions, dropout_ids, subset_positions=subset)
    return sequence, pooled, (None if subset is not None else masked_positions), mlm_labels


def _masked_lm(head: BertLMPredictionHead, sequence, masked_positions, mlm_labels, out: PreTrainingOutput,
               num_items_in_batch=None) -> None:
    """Fill out.mlm_loss + mlm_predictions (labels given) or out.mlm_logits; see BertForPreTraining.forward.
    sequence: every token's state, or (masked_positions None) the masked rows' (n, h). num_items_in_batch: see
    over_items (masked tokens of the whole step)."""
    hidden = sequence.flatten(0, -2)  # (B*S or total or n, h)
    if mlm_labels is not None:
        rows = hidden[masked_positions] if masked_positions is not None else hidden
        out.mlm_loss, out.mlm_predictions = head.loss(rows, mlm_labels)
        out.mlm_loss = over_items(out.mlm_loss, mlm_labels, num_items_in_batch)
    elif masked_positions is not None:
        out.mlm_logits = head(hidden[masked_positions])
    else:
        out.mlm_logits = head(sequence)


class BertForPreTraining(nn.Module):
    """MLM (tied decoder, masked rows only) + a 2-way head on the pooled [CLS]: NSP (Devlin et al. 2019) or SOP
    (ALBERT, Lan et al. 2020); same weights, only the labels differ."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config, self.bert.embeddings.word_embeddings)
        init_weights(self.cls.predictions.transform, config)  # not the decoder: it is the (initialised) embedding
        init_weights(self.cls.seq_relationship, config)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, position_ids=None, cu_seqlens=None,
                max_seqlen=None, masked_positions=None, mlm_labels=None, next_sentence_label=None,
                cls_positions=None, dropout_ids=None, num_items_in_batch=None) -> PreTrainingOutput:
        """masked_positions (n,) flat indices into the flattened token axis (B*S padded, total unpadded);
        mlm_labels (n,) aligned with them — or, without masked_positions, a full (B, S)/(total,) label tensor with
        -100 at unmasked tokens, from which the masked rows are found. next_sentence_label (B,) 0 = IsNext,
        aligned with cls_positions (B,) when given (packed batches; see BertModel.forward). dropout_ids: per-sample
        dropout streams (BertModel.forward); the heads have no dropout. num_items_in_batch: masked tokens of the whole
        optimizer step (over_items); the sentence loss stays a mean over this micro batch's sequences."""
        sequence, pooled, masked_positions, mlm_labels = _encode(
            self.bert, input_ids, token_type_ids, attention_mask, position_ids, cu_seqlens, max_seqlen,
            masked_positions, mlm_labels, cls_positions, dropout_ids)
        out = PreTrainingOutput(nsp_logits=self.cls.seq_relationship(pooled))
        _masked_lm(self.cls.predictions, sequence, masked_positions, mlm_labels, out, num_items_in_batch)
        if next_sentence_label is not None:
            out.nsp_loss = F.cross_entropy(out.nsp_logits.float(), next_sentence_label.view(-1))
        losses = [x for x in (out.mlm_loss, out.nsp_loss) if x is not None]
        if losses:
            out.loss = sum(losses)
        return out


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: ModelConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = BertLMPredictionHead(config, word_embeddings)


class BertForMaskedLM(nn.Module):
    """MLM only (tied decoder, masked rows only), no pooler and no [CLS] head: Hugging Face's BertForMaskedLM, for
    the MLM-only objective (RoBERTa, Liu et al. 2019)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config, self.bert.embeddings.word_embeddings)
        init_weights(self.cls.predictions.transform, config)  # not the decoder: it is the (initialised) embedding

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, position_ids=None, cu_seqlens=None,
                max_seqlen=None, masked_positions=None, mlm_labels=None, cls_positions=None,
                dropout_ids=None, num_items_in_batch=None) -> PreTrainingOutput:
        """As BertForPreTraining.forward without the sentence task: loss = mlm_loss; nsp_* stay None.
        cls_positions is accepted for the same call signature and not needed; dropout_ids as BertModel.forward."""
        sequence, _, masked_positions, mlm_labels = _encode(
            self.bert, input_ids, token_type_ids, attention_mask, position_ids, cu_seqlens, max_seqlen,
            masked_positions, mlm_labels, None, dropout_ids)
        out = PreTrainingOutput()
        _masked_lm(self.cls.predictions, sequence, masked_positions, mlm_labels, out, num_items_in_batch)
        out.loss = out.mlm_loss
        return out


POOLINGS = ("cls", "mean")


def _head_dropout(head: nn.Module, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """A classification head's dropout keyed per sample: x (n_rows, h) or (..., h), rows (n_rows,) int64 Philox row
    ids; the head's site key and the encoder's bit scheme (quantised p, as every keyed site). Training only."""
    cfg = head.config
    return ops.dropout(x, head.dropout.p, seed=head.dropout_seed, row_ids=rows, dropout_bits=cfg.dropout_bits,
                       backend=cfg.kernels)


def mean_states(sequence: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of each sequence's real-token states (sentence-transformers' mean pooling), in fp32, cast back.
    Padded: sequence (B, S, h) with attention_mask (B, S) (1 = real token; None = all real). Unpadded: sequence
    (total, h) with cu_seqlens (B + 1,). Returns (B, h); padding never enters the mean."""
    x = sequence.float()
    if cu_seqlens is not None:
        cu_seqlens = cu_seqlens.to(x.device)
        owner = token_sequence_ids(cu_seqlens, x.shape[0])                            # (total,)
        lengths = seqlens_of(cu_seqlens)                                              # (B,)
        sums = torch.zeros(lengths.numel(), x.shape[-1], dtype=x.dtype, device=x.device).index_add_(0, owner, x)
        counts = lengths.clamp(min=1).to(x.dtype)                                     # (B,)
        return (sums / counts[:, None]).to(sequence.dtype)
    if attention_mask is None:
        return x.mean(1).to(sequence.dtype)
    mask = attention_mask.to(x.dtype)[..., None]                                      # (B, S, 1)
    return ((x * mask).sum(1) / mask.sum(1).clamp(min=1)).to(sequence.dtype)


class BertForSequenceClassification(nn.Module):
    def __init__(self, config: ModelConfig, num_labels: int, classifier_dropout: float | None = None,
                 pooling: str = "cls"):
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.config, self.num_labels, self.pooling = config, num_labels, pooling
        self.bert = BertModel(config, add_pooling_layer=pooling == "cls")
        self.dropout = nn.Dropout(config.hidden_dropout_prob if classifier_dropout is None else classifier_dropout)
        register_dropout_site(self, head_dropout_site(config))
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        init_weights(self.classifier, config)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, position_ids=None, cu_seqlens=None,
                max_seqlen=None, labels=None, cls_positions=None, dropout_ids=None) -> ClassifierOutput:
        """labels (B,) aligned with cls_positions (B,) when given (packed batches, [CLS] pooling only; see
        BertModel.forward). With [CLS] pooling and config.last_layer_subset the last encoder layer computes its
        attention output projection, FFN and LayerNorms for the [CLS] rows only (keys and values from every token):
        the same logits, loss and gradients; ~75% of that layer's work saved. dropout_ids: one int64 per sequence
        keying every dropout mask per sample (BertModel.forward), the head's too (its row: the sequence's [CLS]
        token; with cls_positions the head's dropout draws from torch's generator)."""
        if self.pooling == "mean" and cls_positions is not None:
            raise ValueError("mean pooling takes one sequence per row (padded) or per cu_seqlens segment, not "
                             "packed samples with cls_positions")
        subset = None
        if self.pooling == "cls" and self.bert.config.last_layer_subset:  # the last layer on the [CLS] rows only
            subset = torch.empty(0, dtype=torch.int64, device=input_ids.device)
        sequence, pooled = self.bert(input_ids, token_type_ids, attention_mask, position_ids, cu_seqlens,
                                     max_seqlen, cls_positions, dropout_ids, subset_positions=subset)
        if self.pooling == "mean":
            pooled = mean_states(sequence, attention_mask, cu_seqlens)  # (B, h)
        if dropout_ids is not None and cls_positions is None and self.training and self.dropout.p > 0:
            # one row per sequence: its [CLS] token's row id
            rows = ops.token_row_ids(dropout_ids.to(device=pooled.device, dtype=torch.int64),
                                     torch.zeros(pooled.shape[0], dtype=torch.int64, device=pooled.device))
            pooled = _head_dropout(self, pooled, rows)
        else:
            pooled = self.dropout(pooled)
        logits = self.classifier(pooled)  # (B, C)
        loss = F.cross_entropy(logits.float(), labels.view(-1)) if labels is not None else None
        return ClassifierOutput(loss, logits)


class BertForTokenClassification(nn.Module):
    def __init__(self, config: ModelConfig, num_labels: int, classifier_dropout: float | None = None):
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        self.config, self.num_labels = config, num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(config.hidden_dropout_prob if classifier_dropout is None else classifier_dropout)
        register_dropout_site(self, head_dropout_site(config))
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        init_weights(self.classifier, config)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, position_ids=None, cu_seqlens=None,
                max_seqlen=None, labels=None, num_items_in_batch=None, dropout_ids=None) -> ClassifierOutput:
        """labels: same shape as input_ids, -100 where ignored (padding, non-first sub-words). num_items_in_batch:
        labelled tokens of the whole optimizer step (over_items); None: this micro batch's mean. dropout_ids: as
        BertForSequenceClassification.forward."""
        sequence, _ = self.bert(input_ids, token_type_ids, attention_mask, position_ids, cu_seqlens, max_seqlen,
                                dropout_ids=dropout_ids)
        if dropout_ids is not None and self.training and self.dropout.p > 0:
            # each token's row id, as the encoder's row-wise sites key it
            rows = TokenLayout(attention_mask, cu_seqlens, max_seqlen, input_ids, dropout_ids).token_ids
            sequence = _head_dropout(self, sequence, rows)
        else:
            sequence = self.dropout(sequence)
        logits = self.classifier(sequence)  # (B, S, C) or (total, C)
        loss = None
        if labels is not None:
            flat = (logits.float().flatten(0, -2), labels.flatten())
            if num_items_in_batch is None:
                loss = F.cross_entropy(*flat, ignore_index=-100)
            else:  # the summed loss over the step's labelled tokens (over_items; 0 for a micro batch without any)
                loss = F.cross_entropy(*flat, ignore_index=-100, reduction="sum") / num_items_in_batch
        return ClassifierOutput(loss, logits)
