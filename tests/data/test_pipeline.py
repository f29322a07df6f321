"""The whole chain on a slice of the real Wikipedia extracts: train tokenizer -> prepare -> sample map -> masked
batches, checking BERT's invariants with binomial bounds (4 standard deviations)."""
import numpy as np
import torch

from bertforge.cli import main
from bertforge.data.source import CorpusSource
from bertforge.config.pretrain import PretrainConfig
from bertforge.data.tokenizer import load_tokenizer, special_ids


def bound(p, n):
    return 4 * np.sqrt(p * (1 - p) / n)


def test_chain_invariants_via_cli(wiki_slice, tmp_path):
    tok_dir, data_dir = tmp_path / "tok", tmp_path / "data"
    assert main(["tokenizer", "train", str(wiki_slice), "--out", str(tok_dir), "--vocab-size", "2000"]) == 0
    assert main(["prepare", str(wiki_slice), "--tokenizer", str(tok_dir), "--out", str(data_dir),
                 "--workers", "1", "--max-seq-length", "128"]) == 0
    ids = special_ids(load_tokenizer(tok_dir))
    S = 128
    cfg = PretrainConfig.from_flat(data_dir=str(data_dir), tokenizer=str(tok_dir), micro_batch=64, global_batch=64,
                                   max_seq_length=S, seed=3, eval_fraction=0.05)
    source = CorpusSource(cfg, 0, 1)
    source.start()
    n_samples = n_notnext = n_cand = n_chosen = n_mask = n_keep = 0
    for position in range(len(source.train) // 64):  # one epoch
        batch = source.batch_at(position)
        # labels/ids before masking: reconstruct the original ids from the labels
        masked, labels, tt, att = batch.input_ids, batch.labels, batch.token_type_ids, batch.attention_mask
        original = torch.where(labels != -100, labels, masked)
        lengths = att.sum(1)
        assert (lengths <= S).all() and (original[:, 0] == ids.cls_id).all()
        assert ((original == ids.sep_id) & att.bool()).sum(1).eq(2).all()
        assert (original[att == 0] == ids.pad_id).all()
        real_tt = torch.where(att.bool(), tt, torch.zeros_like(tt))
        switches = (real_tt[:, 1:] != real_tt[:, :-1]) & att[:, 1:].bool()
        assert switches.sum(1).eq(1).all()                      # segment ids switch once, 0 -> 1
        first_sep = (original == ids.sep_id).int().argmax(1)
        assert torch.equal(real_tt.argmax(1), first_sep + 1)     # B starts right after the first [SEP]
        special = torch.isin(original, torch.tensor(ids.as_list())) | (att == 0)
        chosen = labels != -100
        assert not (chosen & special).any()                       # no special token ever masked
        assert torch.equal(labels[chosen], original[chosen])      # labels are the original ids
        assert not torch.isin(original[~special], torch.tensor(ids.as_list())).any()
        n_samples += len(lengths)
        n_notnext += int(batch.next_sentence_label.sum())
        n_cand += int((~special).sum())
        n_chosen += int(chosen.sum())
        n_mask += int((masked[chosen] == ids.mask_id).sum())
        n_keep += int((masked[chosen] == original[chosen]).sum())
    assert n_samples > 2000
    assert abs(n_notnext / n_samples - 0.5) < bound(0.5, n_samples)
    assert abs(n_chosen / n_cand - 0.15) < 0.005                  # per-sequence round(0.15 n), at least 1
    assert abs(n_mask / n_chosen - 0.8) < bound(0.8, n_chosen)
    # unchanged = the 10% kept + random draws that hit the original id (rare with a 2,000-word vocabulary)
    assert abs(n_keep / n_chosen - 0.1) < bound(0.1, n_chosen) + 0.005
    assert abs((n_chosen - n_mask - n_keep) / n_chosen - 0.1) < bound(0.1, n_chosen) + 0.005
