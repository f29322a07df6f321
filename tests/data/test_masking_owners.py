"""One MLM masking entry point per place: the host builds its masker with bertforge.data.masking.build_masker and
masks with Masker (__call__, or mask_sequences for ragged lists); the device masks only through
bertforge.training.device_masking.DeviceMasker (-> bertforge.ops.mlm_mask)."""
import re
from pathlib import Path

import numpy as np

from bertforge.data.masking import Masker, build_masker, replacement_distribution

ROOT = Path(__file__).resolve().parents[2]
HOST, DEVICE = ROOT / "engine" / "data" / "masking.py", ROOT / "engine" / "training" / "device_masking.py"


def _calls(pattern: str) -> set[Path]:
    rx = re.compile(pattern)
    return {p for p in (ROOT / "engine").rglob("*.py")
            if any(rx.search(line.split("#", 1)[0]) for line in p.read_text().splitlines())}


def test_one_host_and_one_device_entry_point():
    assert _calls(r"\bMasker\(") == {HOST}                   # maskers are built by build_masker only
    assert _calls(r"\breplacement_distribution\(") == {HOST}
    assert _calls(r"\bmlm_mask\(") - {ROOT / "engine" / "ops.py"} == {DEVICE}  # the op's dispatcher and its one caller
    assert ROOT / "engine" / "finetuning" / "mlm.py" in _calls(r"\bbuild_masker\(")  # domain MLM masks as the host
    # the one inline 80/10/10: synthetic batches draw it from their own torch stream (pinned synthetic curves)
    assert _calls(r"<\s*0\.8\b") == {ROOT / "engine" / "data" / "synthetic.py"}


def test_build_masker_and_mask_sequences_match_the_padded_masker():
    rng = np.random.default_rng(3)
    seqs = [[2] + rng.integers(5, 50, n).tolist() + [3] for n in rng.integers(0, 30, 9)]
    masker = build_masker(4, 50, [0, 1, 2, 3], None, 0.3, seed=17)
    direct = Masker(4, replacement_distribution(50, [0, 1, 2, 3, 4]), 0.3, 17)
    assert np.array_equal(masker.replacement_probs, direct.replacement_probs)
    width = max(map(len, seqs))
    ids = np.zeros((len(seqs), width), np.int64)
    special = np.ones_like(ids, dtype=bool)
    for i, s in enumerate(seqs):
        ids[i, :len(s)], special[i, :len(s)] = s, np.isin(s, [0, 1, 2, 3])
    padded, labels = direct(ids, special, 2, np.arange(10, 19))
    got_ids, got_labels = masker.mask_sequences(seqs, [0, 1, 2, 3], 2, range(10, 19))
    assert got_ids == [padded[i, :len(s)].tolist() for i, s in enumerate(seqs)]
    assert got_labels == [labels[i, :len(s)].tolist() for i, s in enumerate(seqs)]
    assert any(x != -100 for row in got_labels for x in row)
