"""The pure-torch paths run on a machine without Triton: each check runs in a fresh interpreter whose `import triton`
(and `triton.*`) fails as if the package were not installed, and must end with no Triton module loaded.
`run_without_triton(code)` is the helper: add a check by passing it the code to run."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_BLOCK_TRITON = '''
import sys


class _NoTriton:
    """Meta-path finder that reports triton and triton.* as missing (ModuleNotFoundError, as without the package)."""

    def find_spec(self, name, path=None, target=None):
        if name == "triton" or name.startswith("triton."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoTriton())
'''

_CHECK_NO_TRITON = '''
_loaded = sorted(m for m in sys.modules if m == "triton" or m.startswith("triton."))
assert not _loaded, f"Triton modules were imported: {_loaded}"
'''


def run_without_triton(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Python whose `import triton` fails; assert that it exits 0 and never imported Triton.
    The environment is the test's, without TRITON_INTERPRET; the repository is on the path."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    script = _BLOCK_TRITON + textwrap.dedent(code) + _CHECK_NO_TRITON
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    return res


def test_triton_is_blocked():
    res = run_without_triton('''
        try:
            import triton  # noqa: F401
        except ImportError as exc:
            print("blocked:", exc)
    ''')
    assert "blocked: No module named 'triton'" in res.stdout


def test_model_forward_backward_with_kernels_none():
    """BertForPreTraining, padded and unpadded, forward + backward through the pure-torch ops."""
    res = run_without_triton('''
        import torch
        from bertforge.config import preset
        from bertforge.heads import BertForPreTraining

        torch.manual_seed(0)
        cfg = preset("tiny", vocab_size=211, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=32, kernels="none")
        model = BertForPreTraining(cfg).train()
        lengths = torch.tensor([17, 5, 11])
        mask = (torch.arange(17)[None, :] < lengths[:, None]).long()  # (B, S)
        ids = torch.randint(5, 211, (3, 17)) * mask
        labels = torch.where(torch.rand(3, 17) < 0.3, ids, -100) * mask + (-100) * (1 - mask)
        labels[:, 1] = ids[:, 1]
        nsp = torch.tensor([0, 1, 1])
        out = model(ids, torch.zeros_like(ids), mask, mlm_labels=labels, next_sentence_label=nsp)
        out.loss.backward()
        assert torch.isfinite(out.loss)
        model.zero_grad()
        real = mask.bool()
        cu = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).int()
        out = model(ids[real], torch.zeros_like(ids[real]), cu_seqlens=cu, mlm_labels=labels[real],
                    next_sentence_label=nsp)
        out.loss.backward()
        assert torch.isfinite(out.loss)
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        print("model ok")
    ''')
    assert "model ok" in res.stdout


def test_lamb_step_on_cpu():
    res = run_without_triton('''
        import torch
        from bertforge.optim import Lamb

        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(7, 3)), torch.nn.Parameter(torch.randn(5))]
        before = [p.detach().clone() for p in params]
        for p in params:
            p.grad = torch.randn_like(p)
        Lamb(params, lr=1e-2).step()
        assert all(not torch.equal(p, b) for p, b in zip(params, before))
        print("lamb ok")
    ''')
    assert "lamb ok" in res.stdout


def test_device_masking_backend_none():
    res = run_without_triton('''
        import numpy as np
        import torch
        from bertforge.training.device_masking import DeviceMasker

        vocab, mask_id = 50, 3
        probs = np.ones(vocab)
        probs[:5] = 0.0  # special tokens are never drawn
        masker = DeviceMasker(mask_id, probs / probs.sum(), 0.3, "none", torch.device("cpu"))
        ids = torch.randint(5, vocab, (4, 33))
        special = torch.zeros_like(ids, dtype=torch.bool)
        special[:, 0] = special[:, -1] = True
        out = masker({"input_ids": ids}, special, seed=7)
        pos = out["masked_positions"]
        assert pos.numel() > 0 and not special.flatten()[pos].any()
        assert torch.equal(out["mlm_labels"], ids.flatten()[pos])
        print("masking ok")
    ''')
    assert "masking ok" in res.stdout


def test_triton_backend_names_the_missing_package():
    res = run_without_triton('''
        import torch
        from bertforge import ops
        from bertforge.errors import UserError

        x = torch.randn(2, 4)
        try:
            ops.bias_gelu(x, torch.zeros(4), backend="triton")
        except UserError as exc:
            print("error:", exc)
    ''')
    assert "error: kernels='triton' needs the `triton` package" in res.stdout


def test_pretrain_lamb_and_device_masking_with_kernels_none(tmp_path):
    """`bertforge pretrain` end to end (DeepSpeed engine, LAMB, --masking device on the torch reference)."""
    res = run_without_triton(f'''
        import os
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        from bertforge.cli import main

        code = main(["pretrain", "--synthetic-vocab", "128", "--model", "hidden_size=32", "--model",
                     "num_attention_heads=2", "--model", "intermediate_size=64", "--max-seq-length", "32",
                     "--micro-batch", "4", "--global-batch", "4", "--steps", "2", "--optimizer", "lamb",
                     "--masking", "device", "--kernels", "none", "--no-progress", "--no-export-hf",
                     "--eval-samples", "4", "--output-dir", {str(tmp_path / "run")!r}])
        print("pretrain exit", code)
    ''', timeout=600)
    assert "pretrain exit 0" in res.stdout, res.stderr[-2000:]


def test_finetune_classify_with_kernels_none(tmp_path):
    """`bertforge finetune classify` on a tiny checkpoint (the finetuning loop's pure-torch path)."""
    res = run_without_triton(f'''
        import string
        from pathlib import Path

        import torch
        from bertforge.cli import main
        from bertforge.config.model import tiny
        from bertforge.hf import export_hf
        from bertforge.model import BertModel

        root = Path({str(tmp_path)!r})
        words = ["good", "bad", "film", "great", "awful", "the"]
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(string.ascii_lowercase) + words
        (root / "tok").mkdir()
        (root / "tok" / "vocab.txt").write_text("\\n".join(vocab) + "\\n", encoding="utf-8")
        torch.manual_seed(0)
        config = tiny(hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=len(vocab),
                      max_position_embeddings=64)
        export_hf(BertModel(config), root / "model", tokenizer_dir=root / "tok")
        # distinct texts (the split keeps equal texts together), labels alternating
        rows = ["text,label"] + ["the film " + ("good ", "bad ")[i % 2] + string.ascii_lowercase[i] + (",pos", ",neg")[i % 2]
                                 for i in range(24)]
        (root / "data.csv").write_text("\\n".join(rows) + "\\n", encoding="utf-8")
        code = main(["finetune", "classify", "--model", str(root / "model"), "--data", str(root / "data.csv"),
                     "--split", "0.5,0.25,0.25", "--epochs", "1", "--global-batch", "4", "--max-seq-length", "16",
                     "--no-progress", "--threads", "1", "--recipe", "lecture", "--out", str(root / "out")])
        print("finetune exit", code)
    ''', timeout=600)
    assert "finetune exit 0" in res.stdout, res.stderr[-2000:]
