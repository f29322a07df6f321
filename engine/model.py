"""The BERT encoder: embeddings -> L x [self-attention -> bias+dropout+residual+LN -> FFN bias+GELU ->
bias+dropout+residual+LN] -> pooler. Parameter names are Hugging Face's (`embeddings.word_embeddings`,
`encoder.layer.N.attention.output.dense`, ...) so checkpoints map across one-to-one (engine/hf.py), apart from
the fused `attention.self.Wqkv` (HF's query, key and value stacked; engine/hf.py converts both ways).

One code path serves two batch layouts:
  padded:   input_ids (B, S), attention_mask (B, S) 1 = real token; hidden states (B, S, h)
  unpadded: input_ids (total,), cu_seqlens (B+1,) int32, max_seqlen; hidden states (total, h) — no padding
            tokens are ever computed.
Hot ops go through engine/ops.py, which runs pure torch or the Triton kernels (config.kernels). No distributed
code lives here: DeepSpeed wraps the model from outside (engine/deepspeed.py).

Dropout, per sample: forward takes an optional `dropout_ids`, one non-negative int64 per sequence of the layout (a
caller's identity of each sample, e.g. a hash of its run seed, epoch and index). With it, every dropout site (the
embeddings, each layer's attention probabilities and its two post-LN epilogues) draws its mask from Philox keyed by
(the site's own key, the sequence's id, the position), on both kernel backends alike, so a sample's masks do not
depend on the batch, the micro batch or the rank it lands in, nor on the layout (padded, unpadded, packed). Without
it, dropout is as it always was: torch's generator on the reference path, the kernels' own drawn keys on theirs.
Either way each site applies the quantised probability of config.dropout_bits (ModelConfig.applied_dropout: 0.1 ->
26/256 at 8 bits) and scales kept values by its inverse keep rate (bertforge.kernels.reference, dropout section)."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from bertforge import ops
from bertforge.config import ModelConfig
from bertforge.kernels.padding import cu_seqlens_to_position_ids, max_seqlen_of, token_sequence_ids

_GELU_APPROXIMATE = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}


class TokenLayout:
    """How a forward call's tokens are laid out; built once per forward and handed to every layer. With dropout_ids
    (one per sequence: (B,) padded, (cu_seqlens.numel() - 1,) unpadded) it also holds the per-sample dropout row
    ids: `sequence_ids` (n_seq,) for attention and `token_ids` (n_tokens,) for the row-wise sites, the flattened
    tokens' hash of (sequence id, position in the sequence); both None without dropout_ids."""

    def __init__(self, attention_mask=None, cu_seqlens=None, max_seqlen=None, input_ids=None, dropout_ids=None):
        if attention_mask is not None and cu_seqlens is not None:
            raise ValueError("pass attention_mask (padded batch) or cu_seqlens (unpadded batch), not both")
        self.key_padding_mask = attention_mask.bool() if attention_mask is not None else None  # (B, S)
        self.cu_seqlens = cu_seqlens.to(torch.int32) if cu_seqlens is not None else None  # (B+1,)
        if cu_seqlens is not None and max_seqlen is None:
            max_seqlen = max_seqlen_of(cu_seqlens)
        self.max_seqlen = max_seqlen
        self.sequence_ids = self.token_ids = None
        if dropout_ids is not None:
            self.sequence_ids, self.token_ids = self._dropout_rows(dropout_ids, input_ids)

    @property
    def unpadded(self) -> bool:
        return self.cu_seqlens is not None

    def _dropout_rows(self, dropout_ids, input_ids):
        """-> (sequence ids (n_seq,), token row ids (n_tokens,)) int64 on input_ids' device."""
        dev = input_ids.device
        ids = dropout_ids.to(device=dev, dtype=torch.int64)
        if self.unpadded:
            n_seq, total = self.cu_seqlens.numel() - 1, input_ids.shape[0]
            seq_of_token = token_sequence_ids(self.cu_seqlens, total)  # (total,)
            positions = cu_seqlens_to_position_ids(self.cu_seqlens, total)
        else:
            n_seq, seq = input_ids.shape
            seq_of_token = torch.arange(n_seq, device=dev).repeat_interleave(seq)  # (B * S,)
            positions = torch.arange(seq, device=dev).repeat(n_seq)
        if ids.shape != (n_seq,):
            raise ValueError(f"dropout_ids must be ({n_seq},), one per sequence of the layout, got {tuple(ids.shape)}")
        return ids, ops.token_row_ids(ids[seq_of_token], positions)

    def dropout_seed(self, module: nn.Module):
        """The module's site key when the streams are per sample, else None (each backend draws its own)."""
        return module.dropout_seed if self.sequence_ids is not None else None

    def select(self, rows: torch.Tensor) -> "TokenLayout":
        """The layout the row-wise sites (epilogues) see for the tokens at flat indices rows (n,) only: their
        dropout row ids follow them, so a token's masks are those of the full layer. Not for attention."""
        out = copy.copy(self)
        out.key_padding_mask = out.cu_seqlens = None
        if self.token_ids is not None:
            out.token_ids = self.token_ids[rows]
        return out


def register_dropout_site(module: nn.Module, site: int) -> None:
    """Give a module with dropout its site's Philox key: a (1,) int64 buffer that moves with the module and is never
    saved (not persistent). Sites: 0 the embeddings, 1 + 3 i / 2 + 3 i / 3 + 3 i layer i's attention probabilities,
    attention output and FFN output, then a task head's own dropout (`head_dropout_site`)."""
    module.register_buffer("dropout_seed", torch.tensor([ops.dropout_site_seed(site)], dtype=torch.int64),
                           persistent=False)


def head_dropout_site(config: ModelConfig) -> int:
    """The dropout site of a task head's own dropout (bertforge.heads): the first after the encoder's."""
    return 1 + 3 * config.num_hidden_layers


class WordEmbedding(nn.Embedding):
    """nn.Embedding (same parameter, same module, so DeepSpeed's ZeRO-3 hooks gather it) whose lookup is
    `ops.embedding`: on CPU its (V, h) gradient lives on memory reused across steps (kernels/embedding_cpu.py)."""

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.max_norm is not None or self.scale_grad_by_freq or self.sparse:
            return super().forward(input_ids)
        return ops.embedding(input_ids, self.weight, self.padding_idx)


class BertEmbeddings(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.word_embeddings = WordEmbedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout_p, self.dropout_bits = config.hidden_dropout_prob, config.dropout_bits
        self.backend = config.kernels
        self.max_positions = config.max_position_embeddings
        register_dropout_site(self, 0)

    def forward(self, input_ids, token_type_ids, position_ids, batch: TokenLayout | None = None):
        """input_ids, token_type_ids, position_ids: (B, S) or (total,) int64 -> (..., h)."""
        # checked here only where it costs no device sync and no graph break; BertModel checks the lengths
        if (position_ids.device.type == "cpu" and not torch.compiler.is_compiling() and input_ids.numel()
                and int(position_ids.max()) >= self.max_positions):
            raise ValueError(f"sequence longer than max_position_embeddings ({self.max_positions})")
        x = (self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
             + self.token_type_embeddings(token_type_ids))
        seed, rows = (batch.dropout_seed(self), batch.token_ids) if batch is not None else (None, None)
        return ops.dropout(self.LayerNorm(x), self.dropout_p if self.training else 0.0, seed=seed, row_ids=rows,
                           dropout_bits=self.dropout_bits, backend=self.backend)


class BertSelfAttention(nn.Module):
    """Fused QKV projection (MosaicBERT's `Wqkv`): one (n, h) x (h, 3h) GEMM whose output rows [q | k | v] are
    handed to attention as three strided views (no copy); Wqkv.weight (3h, h) is HF's query, key and value weights
    stacked in that order (engine/hf.py splits and concatenates them at import and export)."""

    def __init__(self, config: ModelConfig, site: int = 1):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.dropout_p, self.dropout_bits = config.attention_probs_dropout_prob, config.dropout_bits
        self.backend = config.kernels
        register_dropout_site(self, site)

    def params_read_in_forward(self) -> list[nn.Parameter]:
        """Child parameters this forward reads directly (the query-rows path slices Wqkv; ZeRO-3 gathers them)."""
        return [self.Wqkv.weight, self.Wqkv.bias]

    def forward(self, x, batch: TokenLayout, subset: torch.Tensor | None = None):
        """x (B, S, h) or (total, h) -> context in the same layout (before the output projection); with subset (n,)
        flat token indices only those rows' context (n, h). Keys and values come from every token; where the
        backend serves query rows (ops.attention_rows_supported: unpadded, on the CPU path or the Triton kernels)
        only the subset's queries are projected and attended (MosaicBERT's subset_idx, carried into attention), else
        all are and the rows selected."""
        dropout_p = self.dropout_p if self.training else 0.0
        if subset is not None and ops.attention_rows_supported(self.backend, x.device, batch.cu_seqlens is not None):
            h, w, b = x.shape[-1], self.Wqkv.weight, self.Wqkv.bias
            k, v = F.linear(x, w[h:], b[h:]).unflatten(-1, (2, self.num_heads, self.head_dim)).unbind(-3)
            q = F.linear(x[subset], w[:h], b[:h]).unflatten(-1, (self.num_heads, self.head_dim))  # (n, nh, d)
            out = ops.attention_rows(q, k, v, cu_seqlens=batch.cu_seqlens, q_rows=subset,
                                     max_seqlen=batch.max_seqlen, dropout_p=dropout_p, seed=batch.dropout_seed(self),
                                     row_ids=batch.sequence_ids, dropout_bits=self.dropout_bits, backend=self.backend)
            return out.flatten(-2)
        qkv = self.Wqkv(x).unflatten(-1, (3, self.num_heads, self.head_dim))  # (B, S, 3, nh, d) or (total, 3, nh, d)
        q, k, v = qkv.unbind(-3)  # views: token stride 3h, head stride d
        out = ops.attention(q, k, v, key_padding_mask=batch.key_padding_mask, cu_seqlens=batch.cu_seqlens,
                            max_seqlen=batch.max_seqlen, dropout_p=dropout_p, seed=batch.dropout_seed(self),
                            row_ids=batch.sequence_ids, dropout_bits=self.dropout_bits, backend=self.backend)
        out = out.flatten(-2)
        return out if subset is None else out.flatten(0, -2)[subset]


class BertSublayerOutput(nn.Module):
    """dense -> bias + dropout + residual add + LayerNorm (HF's BertSelfOutput / BertOutput)."""

    def __init__(self, in_features: int, config: ModelConfig, site: int = 2):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout_p, self.dropout_bits = config.hidden_dropout_prob, config.dropout_bits
        self.backend = config.kernels
        register_dropout_site(self, site)

    def params_read_in_forward(self) -> list[nn.Parameter]:
        """Child parameters this forward reads directly (ZeRO-3 must gather them for this module)."""
        return [self.dense.weight, self.dense.bias, self.LayerNorm.weight, self.LayerNorm.bias]

    def forward(self, x, residual, batch: TokenLayout | None = None):
        seed, rows = (batch.dropout_seed(self), batch.token_ids) if batch is not None else (None, None)
        return ops.linear_bias_dropout_add_layernorm(x, self.dense.weight, self.dense.bias, residual,
                                                     self.LayerNorm.weight, self.LayerNorm.bias, self.LayerNorm.eps,
                                                     self.dropout_p if self.training else 0.0, seed=seed,
                                                     row_ids=rows, dropout_bits=self.dropout_bits,
                                                     backend=self.backend)


class BertAttention(nn.Module):
    def __init__(self, config: ModelConfig, index: int = 0):
        super().__init__()
        self.self = BertSelfAttention(config, site=1 + 3 * index)
        self.output = BertSublayerOutput(config.hidden_size, config, site=2 + 3 * index)

    def forward(self, x, batch: TokenLayout, subset: torch.Tensor | None = None):
        """subset (n,) flat token indices: attention over every token, then the output projection, dropout,
        residual and LayerNorm on those rows only -> (n, h) (MosaicBERT's subset_idx)."""
        if subset is None:
            return self.output(self.self(x, batch), x, batch)
        return self.output(self.self(x, batch, subset), x.flatten(0, -2)[subset], batch.select(subset))


class BertIntermediate(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.approximate = _GELU_APPROXIMATE[config.hidden_act]
        self.backend = config.kernels

    def params_read_in_forward(self) -> list[nn.Parameter]:
        return [self.dense.weight, self.dense.bias]

    def forward(self, x):
        return ops.linear_bias_gelu(x, self.dense.weight, self.dense.bias, self.approximate, backend=self.backend)


class BertLayer(nn.Module):
    def __init__(self, config: ModelConfig, index: int = 0):
        """index: the layer's place in the encoder (keys its dropout sites)."""
        super().__init__()
        self.attention = BertAttention(config, index)
        self.intermediate = BertIntermediate(config)
        self.output = BertSublayerOutput(config.intermediate_size, config, site=3 + 3 * index)

    def forward(self, x, batch: TokenLayout, subset: torch.Tensor | None = None):
        """x (B, S, h) or (total, h) -> the same layout, or (n, h) for the rows at flat indices subset (n,)."""
        x = self.attention(x, batch, subset)
        return self.output(self.intermediate(x), x, batch if subset is None else batch.select(subset))


class BertEncoder(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config, i) for i in range(config.num_hidden_layers))

    def forward(self, x, batch: TokenLayout, subset: torch.Tensor | None = None):
        """subset (n,) flat token indices: the last layer computes only those rows after its attention -> (n, h)."""
        for layer in self.layer[:-1]:  # activation checkpointing, when asked, wraps each layer (engine/parallelize.py)
            x = layer(x, batch)
        return self.layer[-1](x, batch) if subset is None else self.layer[-1](x, batch, subset)


class BertPooler(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, cls_hidden):
        """cls_hidden (B, h): the [CLS] state of each sequence -> tanh(dense) (B, h)."""
        return torch.tanh(self.dense(cls_hidden))


def init_weights(module: nn.Module, config: ModelConfig) -> None:
    """BERT's initialisation: N(0, initializer_range) weights, zero biases, unit LayerNorm, zero [PAD] row."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=config.initializer_range)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=config.initializer_range)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def reinit_top_layers(bert: "BertModel", k: int) -> list[str]:
    """Re-initialise the top `k` encoder layers of `bert` (and its pooler, if any) with BERT's initialisation, in
    place, from torch's current RNG (Zhang et al. 2021, "Revisiting Few-sample BERT Fine-tuning", section 5.2).
    Returns the names of the re-initialised modules. ValueError when k exceeds the number of layers."""
    layers = bert.encoder.layer
    if not 0 <= k <= len(layers):
        raise ValueError(f"cannot re-initialise {k} of the model's {len(layers)} encoder layers")
    names = [f"encoder.layer.{i}" for i in range(len(layers) - k, len(layers))]
    for i in range(len(layers) - k, len(layers)):
        init_weights(layers[i], bert.config)
    if k and bert.pooler is not None:
        init_weights(bert.pooler, bert.config)
        names.append("pooler")
    return names


class BertModel(nn.Module):
    """Embeddings + encoder (+ pooler). forward returns (sequence_output, pooled_output or None)."""

    def __init__(self, config: ModelConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        init_weights(self, config)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, position_ids=None, cu_seqlens=None,
                max_seqlen=None, cls_positions=None, dropout_ids=None, subset_positions=None):
        """Padded: input_ids (B, S) [+ attention_mask (B, S)]. Unpadded: input_ids (total,) + cu_seqlens (B+1,).
        token_type_ids / position_ids default to zeros / 0..len-1 per sequence. cls_positions (n,) flat indices
        (into B*S or total) of the tokens to pool, default each sequence's first; packed batches pass their samples'
        [CLS] (cu_seqlens there also lists padding segments). dropout_ids: None, or one non-negative int64 per
        sequence ((B,) padded, (cu_seqlens.numel() - 1,) unpadded, padding segments included) keying every
        dropout mask per sample (module docstring); read only in training with dropout > 0.
        subset_positions (n,) flat indices: the last layer computes only those rows and the pooled [CLS] rows
        after its attention (BertEncoder.forward); sequence_output is then (n, h), the rows in that order.
        Returns sequence_output (B, S, h) or (total, h), and pooled_output (B, h) or (n, h) (None without a pooler)."""
        if cu_seqlens is not None and input_ids.dim() != 1:
            raise ValueError(f"unpadded input_ids must be (total,), got {tuple(input_ids.shape)}")
        keyed = self.training and (self.config.hidden_dropout_prob > 0 or self.config.attention_probs_dropout_prob > 0)
        batch = TokenLayout(attention_mask, cu_seqlens, max_seqlen, input_ids, dropout_ids if keyed else None)
        longest = batch.max_seqlen if batch.unpadded else input_ids.shape[-1]
        if isinstance(longest, int) and longest > self.embeddings.max_positions:
            raise ValueError(f"sequence of {longest} tokens is longer than max_position_embeddings "
                             f"({self.embeddings.max_positions})")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if position_ids is None:
            if batch.unpadded:
                position_ids = cu_seqlens_to_position_ids(batch.cu_seqlens, input_ids.shape[0])
            else:
                position_ids = torch.arange(input_ids.shape[-1], device=input_ids.device).expand_as(input_ids)
        x = self.embeddings(input_ids, token_type_ids, position_ids, batch)
        if subset_positions is not None:
            return self._forward_subset(x, batch, subset_positions, cls_positions, input_ids.shape)
        x = self.encoder(x, batch)
        pooled = None
        if self.pooler is not None:
            pooled = self.pooler(self.cls_states(x, batch, cls_positions))
        return x, pooled

    def _forward_subset(self, x, batch: TokenLayout, subset, cls_positions, shape):
        """The encoder with its last layer on subset (n,) + the [CLS] rows -> ((n, h), pooled or None)."""
        rows = subset.to(device=x.device, dtype=torch.int64)
        if self.pooler is not None:
            if cls_positions is None:
                cls_positions = (batch.cu_seqlens[:-1].long() if batch.unpadded
                                 else torch.arange(shape[0], device=x.device) * shape[1])  # each sequence's first
            rows = torch.cat([rows, cls_positions.to(device=x.device, dtype=torch.int64)])
        out = self.encoder(x, batch, rows)  # (n [+ n_cls], h)
        n = subset.shape[0]
        pooled = self.pooler(out[n:]) if self.pooler is not None else None
        return out[:n], pooled

    @staticmethod
    def cls_states(x, batch: TokenLayout, cls_positions=None):
        """The first token's state of every sequence (B, h), or the states at cls_positions (n, h)."""
        if cls_positions is not None:
            return x.flatten(0, -2)[cls_positions]
        return x[batch.cu_seqlens[:-1].long()] if batch.unpadded else x[:, 0]
