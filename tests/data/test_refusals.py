"""Refusals of the pretraining data path name the file, the split or flag at fault and what to change."""
import pytest

from bertforge.config.pretrain import PretrainConfig
from bertforge.data.prepare import prepare
from bertforge.data.source import CorpusSource
from bertforge.data.tokenizer import train_wordpiece
from bertforge.errors import DataError

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def _doc(i: int, sentences: int) -> str:
    return " ".join(f"{WORDS[(i + j) % 12].capitalize()} {WORDS[(i * j) % 12]} {WORDS[j % 12]} number {i}."
                    for j in range(sentences))


def _dataset(tmp_path, docs: list[str]):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    train_wordpiece([corpus], tmp_path / "tok", vocab_size=80, show_progress=False)
    prepare([corpus], tmp_path / "tok", tmp_path / "data", workers=1, progress=False)
    return tmp_path / "data", tmp_path / "tok"


def _start(data, tok, eval_fraction, objective="mlm+nsp"):
    source = CorpusSource(PretrainConfig.from_flat(data_dir=str(data), tokenizer=str(tok), micro_batch=2,
                                                   global_batch=2, max_seq_length=64, eval_fraction=eval_fraction,
                                                   objective=objective), 0, 1)
    source.start()
    return source


def test_a_held_out_split_with_too_few_documents_names_the_split_and_the_flag(tmp_path):
    data, tok = _dataset(tmp_path, [_doc(i, 4) for i in range(12)])
    with pytest.raises(DataError) as err:
        _start(data, tok, 0.01)  # 12 documents: 1% holds out fewer than 2
    message = str(err.value)
    assert str(data) in message and "held-out split" in message and "raise --eval-fraction (now 0.01)" in message


def test_single_sentence_documents_say_why_there_are_no_samples(tmp_path):
    data, tok = _dataset(tmp_path, [_doc(i, 1) for i in range(40)])
    with pytest.raises(DataError) as err:
        _start(data, tok, 0.3)
    message = str(err.value)
    assert str(data) in message and "single sentence" in message and "one sentence per line" in message


def test_single_sentence_documents_refuse_sop_but_train_mlm_only(tmp_path):
    """SOP needs two sentences in a document as NSP does; MLM alone needs no sentence structure."""
    data, tok = _dataset(tmp_path, [_doc(i, 1) for i in range(40)])
    with pytest.raises(DataError, match="single sentence, so SOP has no sentence pairs"):
        _start(data, tok, 0.3, "mlm+sop")
    source = _start(data, tok, 0.3, "mlm")
    n_tokens = sum(int(n) for n in source.train.doc_len) + sum(int(n) for n in source.held_out.doc_len)
    assert n_tokens == source.train.data.num_tokens  # every token of the corpus is in one of the two splits
    assert len(source.train) >= 2 and source.next_batch().num_tokens > 0
