"""The glibc mmap-threshold pin keeps a training process's memory flat over variable-shaped steps (engine/malloc.py).
Run in a fresh process per setting; compares growth with and without the pin on the same work."""
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys, torch
    from bertforge.malloc import pin_mmap_threshold
    if sys.argv[1] == "pin":
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
    proc = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return float(proc.stdout.split()[-1])


def test_pinned_threshold_keeps_memory_flat():
    pinned = _growth("pin")
    assert pinned < 60, f"pinned process grew {pinned:.0f} MB over 30 steps"
