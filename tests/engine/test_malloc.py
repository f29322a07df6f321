"""The glibc mmap-threshold pin keeps a training process's memory flat over variable-shaped steps (engine/malloc.py).
Run in a fresh process per setting; compares growth with and without the pin on the same work."""
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys
    from bertforge.malloc import pin_mmap_threshold, use_huge_pages
    if sys.argv[1] == "pin+thp":
        assert use_huge_pages()  # as the CLI: before torch is imported
    import torch
    if sys.argv[1].startswith("pin"):
        assert pin_mmap_threshold()
    from bertforge.config import tiny
    from bertforge.heads import BertForPreTraining
    torch.manual_seed(0)
    model = BertForPreTraining(tiny(vocab_size=4000))
    opt = torch.optim.AdamW(model.parameters())
    def rss():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2 ** 20
    g = torch.Generator().manual_seed(0)
    for step in range(40):
        lengths = torch.randint(20, 128, (32,), generator=g)
        cu = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).int()
        ids = torch.randint(5, 4000, (int(lengths.sum()),), generator=g)
        pos = torch.randperm(ids.numel(), generator=g)[: ids.numel() // 7]
        out = model(ids, cu_seqlens=cu, masked_positions=pos, mlm_labels=ids[pos],
                    next_sentence_label=torch.zeros(32, dtype=torch.long))
        out.loss.backward(); opt.step(); opt.zero_grad()
        if step == 10:
            start = rss()
    print(rss() - start)
""")


def _growth(mode):
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return float(proc.stdout.split()[-1])


def test_pinned_threshold_keeps_memory_flat():
    pinned = _growth("pin")
    assert pinned < 60, f"pinned process grew {pinned:.0f} MB over 30 steps"


def test_pinned_threshold_with_huge_pages_keeps_memory_flat():
    grown = _growth("pin+thp")
    assert grown < 60, f"pinned process with huge pages grew {grown:.0f} MB over 30 steps"


def test_huge_pages_take_effect_only_before_torch():
    """torch's THP allocator page-aligns tensors of >= 2 MB before its madvise (c10 alloc_cpu); its default 64-byte
    alignment lands them 64 bytes into an mmap'd page, so the alignment shows whether the setting took effect."""
    script = textwrap.dedent("""
        import sys
        from bertforge.malloc import use_huge_pages
        first = use_huge_pages()
        import torch
        ptrs = [torch.empty(5 << 20, dtype=torch.uint8).data_ptr() % 4096 for _ in range(4)]
        print(first, use_huge_pages(), all(p == 0 for p in ptrs))
    """)
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "False", "True"]
    env["THP_MEM_ALLOC_ENABLE"] = "0"  # the user's choice is kept
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert out.stdout.split() == ["False", "False", "False"], out.stderr[-2000:]
