"""End-to-end pretraining throughput: bertforge vs Hugging Face `BertForPreTraining` on the same device, model,
batch, sequence length and precision, in one run.

For each model shape it times N optimizer steps (after warm-up; CUDA events on GPU, perf_counter on CPU; median) of
  hf                  transformers BertForPreTraining, SDPA attention, bf16 autocast, AdamW(fused=True) (the Trainer's
                      default since torch 2.8, on CPU too), batches
                      padded to their longest sequence (multiple of 8, as DataCollatorForLanguageModeling does),
                      MLM logits on every token: what users run
  hf-compile          the same under torch.compile
  ours                bertforge with everything on: unpadded (varlen) batches, Triton kernels (GPU), masked-rows-only
                      MLM head with the fused sparse loss, fused AdamW (CPU too); dropout keyed per sample
                      (`dropout_ids`), as pretraining runs it (every ours* variant; on CPU the masks from the C++
                      Philox, as `bertforge pretrain` registers it)
  ours-compile        the same under torch.compile (the kernels are custom ops it traces through)
and the ablations, each switching ONE piece of `ours` off (or adding one):
  ours-padded         padded (B, S) batches instead of unpadded
  ours-unfused-qkv    three (n, h) x (h, h) Q, K, V projections (slices of the fused Wqkv, so the same weights) instead
                      of one (n, h) x (h, 3h) GEMM: the share of the fused QKV
  ours-full-last-layer  the last encoder layer on every token (ModelConfig.last_layer_subset=False) instead of the
                      masked rows and [CLS] only: the share of the subset layer
  ours-dropout24      dropout at 24-bit thresholds, one Philox call per 4 elements (ModelConfig.dropout_bits=24),
                      instead of 8-bit ones, one call per 16: the share of the cheaper dropout bits (C++ Philox on CPU)
  ours-no-kernels     kernels='none': torch/SDPA references instead of the Triton kernels
  ours-dense-mlm      the MLM head over every real token (labels -100 where unmasked) instead of masked rows
  ours-unfused-adamw  torch AdamW without fused=True
  ours-torch-mlm-loss the MLM loss as plain torch (F.linear + cross_entropy on full-precision (n, V) logits + argmax)
                      instead of the CPU path's blocked one (kernels/mlm_loss_cpu.py); CPU only (on GPU the
                      Triton kernel replaces both)
  ours-device-mask    + MLM masking inside the timed step (Triton kernel on GPU) from unmasked batches
  ours-lamb           our fused multi-tensor LAMB instead of AdamW
  ours-fresh-buffers  the CPU path's large per-step tensors (the (V, h) weight gradients, the autocast copy of the
                      decoder weight, the MLM logits) allocated fresh every step instead of on memory reused across
                      steps (kernels/host_buffers.py); CPU only
  ours-per-call-philox  the CPU path's dropout masks through the per-call C++ Philox (counter arrays in, one call's
                      flags out, then converted to multipliers in torch) instead of whole rows at a time (vectorised,
                      multipliers out: csrc/philox_rows.cpp); the same masks; CPU only
  ours-autograd-tied-sum  the tied word embedding / MLM decoder weight's two gradients summed by autograd (a fresh
                      (V, h) tensor every step) instead of handed from the decoder's backward to the embedding's
                      (kernels/tied_grad.py); CPU only
  ours-all-queries    the last layer's attention for every query, its rows selected afterwards, instead of for the
                      masked rows and [CLS] only (ops.attention_rows: reference.attention_varlen_rows_ref on the
                      CPU path, kernels/attention_rows.py with the Triton kernels)
  ours-bf16-weights   (bf16 only) the weights themselves in bf16 and fp32 master weights that AdamW updates (gradients
                      copied up, masters copied back), as DeepSpeed runs `bertforge pretrain --precision bf16`, instead
                      of autocast over fp32 weights (HF's Trainer regime, which every other row uses)
`--variants ablation` runs hf and all of the above. Batches are built (and, except for ours-device-mask, masked)
outside the timed region, as a prefetching loader delivers them (engine/data/prefetch.py).

Every row also records what it trained: loss_init, the loss of the first batch in eval mode (no dropout) from the
initial weights, the loss of every step (warm-up included), and loss_last (eval mode again, after the steps). Every `ours*`
variant starts from the same seed, so the same weights: its loss_init must equal that of the pure-torch path
(`ours-no-kernels`, computed for the check even when not asked for) within LOSS_RTOL (2e-2 relative in bf16, 2e-3 in
fp32; bf16 rounding of a mean of ~5,000 token losses is ~1e-3), its losses must be finite and loss_last below
loss_init. A row that fails says why (`loss_check`), prints FAIL, and the script exits 1. `ours-device-mask` masks
its own batches (other labels), HF starts from other weights: their losses are recorded, not compared.

Reports sequences/s, real (non-pad) tokens/s, MFU against the measured bf16 matmul rate of the same device (the
training FLOPs per token: 72·L·h² + 12·L·h·s + 6·m·(h² + h·V), m = 0.15), peak memory and ratios to hf.
Lengths: full-length rows (--lengths full) or drawn from the Wikipedia sample-length histogram in
benchmarks/wiki_lengths.json (--lengths wiki; regenerate with --write-lengths DATA_DIR from a `bertforge prepare`
output). --max-batch doubles the batch of hf and ours until it no longer fits (the largest that fits).
On CPU it runs the tiny shape so CI exercises it: `python benchmarks/train_throughput.py --shapes tiny-64`.
Output: a JSON file (--out) and a table on stdout."""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bertforge.config import preset  # noqa: E402
from bertforge.heads import BertForPreTraining  # noqa: E402

SHAPES = {"tiny-64": ("tiny", 64), "base-128": ("bert-base", 128), "base-512": ("bert-base", 512),
          "large-128": ("bert-large", 128), "large-512": ("bert-large", 512), "minilm-128": ("minilm-l6", 128)}
ABLATIONS = ("ours-padded", "ours-unfused-qkv", "ours-full-last-layer", "ours-dropout24", "ours-no-kernels",
             "ours-dense-mlm", "ours-unfused-adamw", "ours-torch-mlm-loss", "ours-device-mask", "ours-lamb",
             "ours-fresh-buffers", "ours-per-call-philox", "ours-autograd-tied-sum", "ours-all-queries",
             "ours-bf16-weights")
VARIANTS = ("hf", "hf-compile", "ours", "ours-compile") + ABLATIONS
MASK_SHARE = 0.15
MASK_ID, SPECIAL_IDS = 4, 5  # ids 0..4 are [PAD] [UNK] [CLS] [SEP] [MASK]; real tokens are drawn from 5..V-1
LENGTHS_FILE = ROOT / "benchmarks" / "wiki_lengths.json"
LOSS_RTOL = {torch.bfloat16: 2e-2, torch.float32: 2e-3}  # loss_init of ours* vs the pure-torch path, relative


def train_flops_per_token(L: int, h: int, s: int, V: int) -> float:
    return 72 * L * h * h + 12 * L * h * s + 6 * MASK_SHARE * (h * h + h * V)


def _timed(fn, device, repeats):
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


def measure_matmul_rate(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of a large square matmul on this device (the MFU ceiling): its fastest of 10 repeats, so that a
    moment of load from another process does not lower the ceiling (a median did, and MFU read above 100%)."""
    n = 8192 if device.type == "cuda" else 1024
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    return 2 * n ** 3 / min(_timed(lambda: a @ b, device, repeats=10))


# ---- lengths -----------------------------------------------------------------------------------------------------
def write_lengths(data_dir: str, seqs=(128, 512), path: Path = LENGTHS_FILE) -> None:
    """Histogram of real sample lengths (all splits) of a prepared dataset's NSP sample maps, per sequence length."""
    from bertforge.data.pretraining import PretrainingDataset

    meta = json.loads((Path(data_dir) / "meta.json").read_text())
    out = {"source": {k: meta.get(k) for k in ("n_docs", "n_sentences", "n_tokens", "vocab_size", "tokenizer_hash")},
           "histograms": {}}
    for seq in seqs:
        ds = PretrainingDataset(data_dir, max_seq_length=seq, split="all")
        rows = np.asarray(ds.samples)
        lengths = (rows[:, 1] - rows[:, 0]) + (rows[:, 3] - rows[:, 2]) + 3
        out["histograms"][str(seq)] = np.bincount(lengths, minlength=seq + 1).tolist()
        print(f"S={seq}: {len(lengths)} samples, mean length {lengths.mean():.1f}, padding "
              f"{1 - lengths.mean() / seq:.1%}")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out) + "\n")
    tmp.replace(path)


def lengths_pool(spec: str, seq: int):
    """None (full length) or an array of lengths to draw from."""
    if spec == "full":
        return None
    if spec == "wiki":
        hist = json.loads(LENGTHS_FILE.read_text())["histograms"]
        if str(seq) not in hist:
            raise SystemExit(f"{LENGTHS_FILE}: no histogram for S={seq}; rerun with --write-lengths DATA_DIR")
        counts = np.asarray(hist[str(seq)])
        return np.repeat(np.arange(len(counts)), counts)
    return np.load(spec)


# ---- batches -----------------------------------------------------------------------------------------------------
def make_batch(batch: int, seq: int, vocab: int, pool, gen) -> dict:
    """Host tensors: ids (B, S) with real lengths, special mask, 15% of non-special tokens chosen with BERT's
    80/10/10 (labels -100 elsewhere), NSP labels."""
    if pool is None:
        lengths = torch.full((batch,), seq, dtype=torch.long)
    else:
        lengths = torch.as_tensor(pool)[torch.randint(0, len(pool), (batch,), generator=gen)].clamp(4, seq).long()
    pos = torch.arange(seq)[None, :]
    real = pos < lengths[:, None]
    sep_a = lengths[:, None] // 2
    ids = torch.randint(SPECIAL_IDS, vocab, (batch, seq), generator=gen) * real
    ids[:, 0] = 2
    ids[(pos == sep_a) | (pos == lengths[:, None] - 1)] = 3
    special = ~real | (pos == 0) | (pos == sep_a) | (pos == lengths[:, None] - 1)
    types = ((pos > sep_a) & real).long()
    chosen = (torch.rand(batch, seq, generator=gen) < MASK_SHARE) & ~special
    labels = torch.where(chosen, ids, -100)
    r = torch.rand(batch, seq, generator=gen)
    masked = torch.where(chosen & (r < 0.8), MASK_ID, ids)
    masked = torch.where(chosen & (r >= 0.8) & (r < 0.9), torch.randint(SPECIAL_IDS, vocab, ids.shape, generator=gen),
                         masked)
    return {"ids": ids, "masked": masked, "types": types, "real": real, "special": special, "labels": labels,
            "lengths": lengths, "nsp": torch.randint(0, 2, (batch,), generator=gen)}


def step_inputs(variant: str, b: dict, device) -> dict:
    """The forward's arguments for one variant, on the device (built before timing)."""
    to = lambda t: t.contiguous().to(device)  # noqa: E731
    if variant.startswith("hf"):
        width = min(b["ids"].shape[1], -(-int(b["lengths"].max()) // 8) * 8)  # pad to longest, multiple of 8
        return {"input_ids": to(b["masked"][:, :width]), "token_type_ids": to(b["types"][:, :width]),
                "attention_mask": to(b["real"][:, :width].long()), "labels": to(b["labels"][:, :width]),
                "next_sentence_label": to(b["nsp"])}
    dropout_ids = to(torch.arange(b["nsp"].numel()))  # per-sample dropout streams, as pretraining passes them
    if variant == "ours-padded":
        flat = b["labels"].flatten()
        positions = (flat != -100).nonzero().flatten()
        return {"input_ids": to(b["masked"]), "token_type_ids": to(b["types"]), "attention_mask": to(b["real"].long()),
                "masked_positions": to(positions), "mlm_labels": to(flat[positions]),
                "next_sentence_label": to(b["nsp"]), "dropout_ids": dropout_ids}
    real = b["real"]
    cu = torch.nn.functional.pad(b["lengths"].cumsum(0), (1, 0)).int()
    labels = b["labels"][real]
    rows = torch.arange(labels.numel()) if variant == "ours-dense-mlm" else (labels != -100).nonzero().flatten()
    inputs = {"input_ids": to(b["masked"][real]), "token_type_ids": to(b["types"][real]), "cu_seqlens": to(cu),
              "max_seqlen": int(b["lengths"].max()), "cls_positions": to(cu[:-1].long()),
              "position_ids": to((torch.arange(real.shape[1])[None, :].expand_as(real))[real]),
              "masked_positions": to(rows), "mlm_labels": to(labels[rows]), "next_sentence_label": to(b["nsp"]),
              "dropout_ids": dropout_ids}
    if variant == "ours-device-mask":  # unmasked ids; the step masks them
        inputs.update(input_ids=to(b["ids"][real]), special=to(b["special"][real]))
        del inputs["masked_positions"], inputs["mlm_labels"]
    return inputs


# ---- variants ----------------------------------------------------------------------------------------------------
def unfuse_qkv(model) -> None:
    """ours-unfused-qkv: every self-attention computes Q, K and V with three GEMMs over thirds of its Wqkv (the
    layout before the fused projection; the slices' gradients are added into Wqkv.grad, a small extra cost)."""
    import torch.nn.functional as F
    from bertforge import ops
    from bertforge.model import BertSelfAttention

    def forward(self, x, batch, subset=None):  # as BertSelfAttention.forward, with three projections
        h, heads = x.shape[-1], (self.num_heads, self.head_dim)
        w, b = self.Wqkv.weight, self.Wqkv.bias
        rows = subset is not None and ops.attention_rows_supported(self.backend, x.device, batch.cu_seqlens is not None)
        q = F.linear(x[subset] if rows else x, w[:h], b[:h]).unflatten(-1, heads)
        k, v = (F.linear(x, w[i * h:(i + 1) * h], b[i * h:(i + 1) * h]).unflatten(-1, heads) for i in (1, 2))
        kw = dict(dropout_p=self.dropout_p if self.training else 0.0, seed=batch.dropout_seed(self),
                  row_ids=batch.sequence_ids, dropout_bits=self.dropout_bits, backend=self.backend)
        if rows:
            return ops.attention_rows(q, k, v, cu_seqlens=batch.cu_seqlens, q_rows=subset, max_seqlen=batch.max_seqlen,
                                      **kw).flatten(-2)
        out = ops.attention(q, k, v, key_padding_mask=batch.key_padding_mask, cu_seqlens=batch.cu_seqlens,
                            max_seqlen=batch.max_seqlen, **kw).flatten(-2)
        return out if subset is None else out.flatten(0, -2)[subset]

    for m in model.modules():
        if isinstance(m, BertSelfAttention):
            m.forward = forward.__get__(m)


def plain_mlm_loss(model) -> None:
    """ours-torch-mlm-loss: the MLM head's loss through `masked_lm_loss_ref` (plain torch on full logits)."""
    from bertforge.kernels.reference import masked_lm_loss_ref

    head = model.cls.predictions
    head.loss = lambda hidden, labels: masked_lm_loss_ref(head.transform(hidden), head.decoder.weight, head.bias,
                                                          labels)


class MasterWeights:
    """ours-bf16-weights: the model's parameters cast to `dtype` (in place, same Parameter objects) and an fp32
    master copy of each that a fused AdamW updates: step() copies the gradients up, steps, and copies the masters
    back, the update DeepSpeed's bf16 optimizers make (engine/deepspeed.py). Same interface as an optimizer."""

    def __init__(self, model, groups: list[dict], dtype):
        from bertforge.optim import build_optimizer

        self.params = [p for g in groups for p in g["params"]]
        self.masters = [p.detach().float().clone() for p in self.params]
        it = iter(self.masters)
        self.optimizer = build_optimizer("adamw", [{**g, "params": [next(it) for _ in g["params"]]} for g in groups],
                                         1e-4, fused=True)
        model.to(dtype)

    def step(self):
        for master, p in zip(self.masters, self.params):
            master.grad = None if p.grad is None else p.grad.float()
        self.optimizer.step()
        with torch.no_grad():
            torch._foreach_copy_(self.params, self.masters)

    def zero_grad(self, set_to_none: bool = True):
        for p in self.params:
            p.grad = None
        self.optimizer.zero_grad(set_to_none=set_to_none)


def build(variant: str, cfg, device):
    """-> (parameters' owner, forward(inputs) -> loss, optimizer)."""
    if variant.startswith("hf"):
        import transformers

        model = transformers.BertForPreTraining._from_config(transformers.BertConfig(**cfg.to_hf_config()),
                                                             attn_implementation="sdpa").to(device)

        def forward(inputs):
            return model(**inputs).loss
    else:
        kernels = "none" if variant == "ours-no-kernels" or device.type != "cuda" else "triton"
        model = BertForPreTraining(cfg.replace(kernels=kernels, last_layer_subset=variant != "ours-full-last-layer",
                                               dropout_bits=24 if variant == "ours-dropout24" else 8)).to(device)
        if variant == "ours-unfused-qkv":
            unfuse_qkv(model)
        if variant == "ours-torch-mlm-loss":
            plain_mlm_loss(model)
        masker = None
        if variant == "ours-device-mask":
            from bertforge.data.masking import replacement_distribution
            from bertforge.training.device_masking import DeviceMasker

            probs = replacement_distribution(cfg.vocab_size, range(SPECIAL_IDS))
            masker = DeviceMasker(MASK_ID, probs, MASK_SHARE, kernels, device)
        counter = iter(range(1 << 62))

        def forward(inputs):
            if masker is not None:
                inputs = dict(inputs)
                inputs = masker(inputs, inputs.pop("special"), next(counter))
            return model(**inputs).loss
    if variant.endswith("compile"):
        forward = torch.compile(forward, dynamic=True)
    from bertforge.optim import build_optimizer, param_groups

    groups = param_groups(model, 0.01)
    if variant == "ours-bf16-weights":
        optimizer = MasterWeights(model, groups, torch.bfloat16)
    elif variant == "ours-lamb":
        optimizer = build_optimizer("lamb", groups, 1e-4)
    else:
        optimizer = build_optimizer("adamw", groups, 1e-4, fused=variant != "ours-unfused-adamw")  # CPU too
    return model, forward, optimizer


def _eval_loss(model, forward, inputs, autocast) -> float:
    """Loss of one batch in eval mode (no dropout), weights unchanged."""
    model.eval()
    with torch.no_grad(), autocast:
        torch.manual_seed(2)  # ours-device-mask draws its masking seed from it
        loss = float(forward(inputs))
    model.train()
    return loss


def profile_table(step, device, path: Path, top: int = 25) -> None:
    """One more step under torch.profiler: the top `top` kernels (device time on GPU, CPU time otherwise) as a
    text table at path."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(prof.key_averages().table(sort_by=key, row_limit=top, max_name_column_width=70) + "\n")


def applicable(variant: str, device, dtype) -> bool:
    """Whether `variant` measures anything on this device and precision (see the module docstring)."""
    if variant == "ours-bf16-weights":
        return dtype == torch.bfloat16
    if variant in ("ours-fresh-buffers", "ours-per-call-philox", "ours-autograd-tied-sum"):
        return device.type == "cpu"
    return True


def run_variant(variant, cfg, seq, batch, steps, warmup, device, dtype, pool, profile_out=None):
    if not applicable(variant, device, dtype):
        raise ValueError(f"{variant} does not apply here: it needs "
                         + ("--precision bf16" if variant == "ours-bf16-weights" else "a CPU"))
    from bertforge import ops
    from bertforge.kernels import host_buffers, reference, tied_grad

    host_buffers.reuse(variant != "ours-fresh-buffers")  # the CPU path's switches, each row its own
    tied_grad.use(variant != "ours-autograd-tied-sum")
    ops.QUERY_ROWS = variant != "ours-all-queries"
    if device.type == "cpu":  # as `bertforge pretrain` runs (parallelize): the CPU path's native dropout masks
        from bertforge import csrc
        from bertforge.parallelize import apply_native_cpu

        apply_native_cpu()
        if variant == "ours-per-call-philox":
            reference.use_native_philox(csrc.philox_words, csrc.philox_keep)
    torch.manual_seed(0)
    model, forward, optimizer = build(variant, cfg, device)
    gen = torch.Generator().manual_seed(1)
    host = [make_batch(batch, seq, cfg.vocab_size, pool, gen) for _ in range(4)]
    inputs = [step_inputs(variant, b, device) for b in host]
    autocast = torch.autocast(device.type, dtype=dtype,
                              enabled=dtype != torch.float32 and variant != "ours-bf16-weights")
    loss_init = _eval_loss(model, forward, inputs[0], autocast)
    count = [0]
    losses = []  # device tensors, read after timing (no sync inside the timed steps)

    def step():
        with autocast:
            loss = forward(inputs[count[0] % len(inputs)])
        count[0] += 1
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        step()
    median = statistics.median(_timed(step, device, steps))
    if profile_out is not None:
        profile_table(step, device, Path(profile_out))
    real_tokens = statistics.mean(int(b["lengths"].sum()) for b in host)
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else None
    loss_last = _eval_loss(model, forward, inputs[0], autocast)
    del model, optimizer, inputs
    return {"variant": variant, "step_s": median, "seq_per_s": batch / median, "real_tok_per_s": real_tokens / median,
            "real_tokens_per_step": real_tokens, "peak_gib": peak, "loss_init": loss_init,
            "losses": [float(x) for x in losses], "loss_last": loss_last}


def reference_loss(cfg, seq, batch, device, dtype, pool) -> float:
    """loss_init of the pure-torch path (`ours-no-kernels`): same seed, weights and first batch as every ours*."""
    torch.manual_seed(0)
    model, forward, _ = build("ours-no-kernels", cfg, device)
    gen = torch.Generator().manual_seed(1)
    inputs = step_inputs("ours-no-kernels", make_batch(batch, seq, cfg.vocab_size, pool, gen), device)
    loss = _eval_loss(model, forward, inputs, torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32))
    del model
    return loss


def check_losses(row: dict, ref_loss: float | None, rtol: float) -> None:
    """Sets row["loss_check"] ("ok", "n/a: ..." or why it failed) and row["loss_ok"]."""
    v = row["variant"]
    if "loss_init" not in row:
        return
    losses = [row["loss_init"], row["loss_last"], *row["losses"]]
    if not all(math.isfinite(x) for x in losses):
        row["loss_check"] = "non-finite loss"
    elif v.startswith("hf") or v == "ours-device-mask" or ref_loss is None:
        row["loss_check"] = "n/a: other weights or other masked tokens"
    elif abs(row["loss_init"] - ref_loss) > rtol * abs(ref_loss):
        row["loss_check"] = (f"loss_init {row['loss_init']:.4f} vs pure torch {ref_loss:.4f}: beyond "
                             f"{rtol:g} relative")
    elif not row["loss_last"] < row["loss_init"]:
        row["loss_check"] = f"did not train: loss_last {row['loss_last']:.4f} >= loss_init {row['loss_init']:.4f}"
    else:
        row["loss_check"] = "ok"
    row["ref_loss_init"] = ref_loss
    row["loss_ok"] = row["loss_check"] == "ok" or row["loss_check"].startswith("n/a")


def _oom(exc: Exception) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def max_batch(variant, cfg, seq, start, device, dtype, pool, limit=8192) -> int:
    """Largest power-of-2 multiple of `start` that runs one warm-up + one timed step."""
    best, batch = 0, start
    while batch <= limit:
        try:
            run_variant(variant, cfg, seq, batch, 1, 1, device, dtype, pool)
            best, batch = batch, batch * 2
        except Exception as exc:  # noqa: BLE001  anything but OOM is a real failure
            if not _oom(exc):
                raise
            break
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default="tiny-64", help=f"comma list of {', '.join(SHAPES)}")
    p.add_argument("--variants", default="hf,ours,ours-padded",
                   help=f"comma list of {', '.join(VARIANTS)}; 'ablation' = hf + ours + every ablation; '' = none "
                        "(with --max-batch: only the search)")
    p.add_argument("--batch", type=str, default="8", help="micro batch, or shape=batch pairs: base-128=256,...")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--lengths", default="full", help="'full', 'wiki' (benchmarks/wiki_lengths.json) or a .npy file")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--max-batch", action="store_true", help="also find the largest batch of hf and ours that fits")
    p.add_argument("--max-batch-limit", type=int, default=4096,
                   help="stop doubling here (on CPU the OS kills a process that runs out of memory, so keep it low)")
    p.add_argument("--write-lengths", metavar="DATA_DIR", help="write benchmarks/wiki_lengths.json and exit")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch's default")
    p.add_argument("--out", default="benchmarks/results/train_throughput.json")
    p.add_argument("--isolate", action="store_true",
                   help="run each variant in its own process (same arguments), so none inherits another's allocator "
                        "state: on CPU the row after hf ran 3-5%% slower than the same variant later in the run")
    p.add_argument("--profile", metavar="VARIANT", help="after timing VARIANT, profile one more step of it")
    p.add_argument("--profile-out", default="benchmarks/results/profile.txt",
                   help="--profile's top-kernels table (text)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.write_lengths:
        write_lengths(args.write_lengths)
        return None
    variants = ["hf", "ours", *ABLATIONS] if args.variants == "ablation" else [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variant(s) {', '.join(sorted(unknown))}; known: {', '.join(VARIANTS)}")
    unknown = set(args.shapes.split(",")) - set(SHAPES)
    if unknown:
        p.error(f"unknown shape(s) {', '.join(sorted(unknown))}; known: {', '.join(SHAPES)}")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}.get(
        args.precision, torch.bfloat16 if device.type == "cuda" else torch.float32)
    if args.variants == "ablation":  # only the rows that apply to this device and precision
        variants = [v for v in variants if applicable(v, device, dtype)]
    batches = {}
    for item in args.batch.split(","):
        key, _, value = item.rpartition("=")
        batches[key or "*"] = int(value)
    peak = measure_matmul_rate(device, dtype)
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "dtype": str(dtype),
              "threads": torch.get_num_threads(), "load_avg_start": _load_avg(),
              "matmul_flops": peak, "rows": [], "max_batch": {}}
    print(f"device {result['device']}  {result['dtype']}  matmul {peak / 1e12:.1f} TFLOP/s", flush=True)
    print(TABLE_HEAD, flush=True)
    for shape in args.shapes.split(","):
        name, seq = SHAPES[shape]
        cfg = preset(name, vocab_size=args.vocab)
        batch = batches.get(shape, batches.get("*", 8))
        pool = lengths_pool(args.lengths, seq)
        flops_tok = train_flops_per_token(cfg.num_hidden_layers, cfg.hidden_size, seq, cfg.vocab_size)
        ref_loss = None
        if any(v.startswith("ours") for v in variants):
            try:
                ref_loss = reference_loss(cfg, seq, batch, device, dtype, pool)
            except Exception as exc:  # noqa: BLE001  the rows say so
                print(f"reference loss failed: {type(exc).__name__}: {exc}"[:300], flush=True)
        for variant in variants:
            if args.isolate:
                r = isolated_row(args, shape, variant)
                for key, value in (("batch", batch), ("seq", seq), ("lengths", args.lengths)):
                    r.setdefault(key, value)
                if "step_s" in r:  # the child's MFU is against its own matmul measurement: use this run's one peak
                    r["mfu_own_peak"] = r.get("mfu")
                    r["mfu"] = r["real_tok_per_s"] * flops_tok / peak
                result["rows"].append(r)
                _save(result, Path(args.out))
                print(table_row(r), flush=True)
                continue
            try:
                r = run_variant(variant, cfg, seq, batch, args.steps, args.warmup, device, dtype, pool,
                                profile_out=args.profile_out if variant == args.profile else None)
            except Exception as exc:  # noqa: BLE001  report, keep measuring the others
                r = {"variant": variant, "error": f"{type(exc).__name__}: {exc}"[:300]}
            r.update(shape=shape, batch=batch, seq=seq, lengths=args.lengths)
            if "step_s" in r:
                r["mfu"] = r["real_tok_per_s"] * flops_tok / peak
                check_losses(r, ref_loss, LOSS_RTOL.get(dtype, 2e-2))
            result["rows"].append(r)
            _save(result, Path(args.out))  # after every row: a run cut short by a time limit keeps what it measured
            print(table_row(r), flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if args.max_batch:
            found = result["max_batch"].setdefault(shape, {})
            for v in ("hf", "ours"):
                found[v] = max_batch(v, cfg, seq, batch, device, dtype, pool, args.max_batch_limit)
                _save(result, Path(args.out))
            print(f"largest batch that fits, {shape}: " + ", ".join(f"{v} {b}" for v, b in found.items()), flush=True)
    result["load_avg_end"] = _load_avg()
    result["all_ok"] = all("error" not in r and r.get("loss_ok", True) for r in result["rows"])
    _save(result, Path(args.out))
    return result


def isolated_row(args, shape: str, variant: str) -> dict:
    """--isolate: one variant of one shape timed by a fresh process of this script; its row (or its error)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--shapes", shape, "--variants", variant,
               "--batch", args.batch, "--steps", str(args.steps), "--warmup", str(args.warmup), "--lengths",
               args.lengths, "--precision", args.precision, "--vocab", str(args.vocab), "--threads",
               str(args.threads), "--out", str(out)]
        if args.profile == variant:
            cmd += ["--profile", variant, "--profile-out", args.profile_out]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        rows = json.loads(out.read_text())["rows"] if out.exists() else []
    if not rows:
        return {"variant": variant, "shape": shape, "error": f"isolated run exited {proc.returncode}: "
                                                             f"{proc.stderr.strip()[-300:]}"}
    return rows[0]


def _load_avg():
    """The 1, 5 and 15 minute load averages (None where the OS has none): timings on a shared machine need them."""
    try:
        import os

        return list(os.getloadavg())
    except OSError:
        return None


def _save(result: dict, out: Path) -> None:
    rows = result["rows"]
    for r in rows:
        base = next((x for x in rows if x["shape"] == r["shape"] and x["variant"] == "hf" and "step_s" in x), None)
        if base and "step_s" in r:
            r["speedup_vs_hf"] = r["real_tok_per_s"] / base["real_tok_per_s"]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)


VARIANT_WIDTH = max(len(v) for v in VARIANTS)  # the table's variant column: the longest name
TABLE_HEAD = (f"{'shape':<10} {'lengths':<7} {'variant':<{VARIANT_WIDTH}} {'batch':>5} {'seq/s':>9} {'real tok/s':>11} "
              f"{'MFU':>6} {'peak GiB':>8} {'x hf':>6} {'loss0':>7} {'loss_end':>8} check")


def table_row(r: dict) -> str:
    head = f"{r['shape']:<10} {str(r['lengths'])[:7]:<7} {r['variant']:<{VARIANT_WIDTH}} {r['batch']:>5}"
    if "error" in r:
        return f"{head}  ERROR {r['error']}"
    peak_s = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
    check = r.get("loss_check", "")
    check = check if check in ("", "ok") or check.startswith("n/a") else "FAIL " + check
    return (f"{head} {r['seq_per_s']:>9.1f} {r['real_tok_per_s']:>11.0f} {r['mfu']:>6.1%} {peak_s:>8} "
            f"{r.get('speedup_vs_hf', float('nan')):>6.2f} {r['loss_init']:>7.3f} {r['loss_last']:>8.3f} "
            f"{check.split(':')[0] if check.startswith('n/a') else check}")


if __name__ == "__main__":
    res = main()
    sys.exit(0 if res is None or res["all_ok"] else 1)
