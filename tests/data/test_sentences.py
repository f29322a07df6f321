"""Sentence boundaries in any script (sentencex) and the one-sentence-per-line convention, on the handed inputs."""
from pathlib import Path

import pytest

from bertforge.data.readers import read_documents
from bertforge.data.sentences import split_sentences

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.mark.parametrize("text, expected", [
    ("the port opened in 1900. it grew quickly. today it handles grain.",
     ["the port opened in 1900.", "it grew quickly.", "today it handles grain."]),
    ("今天早上下了大雨。我们在家里看书。下午天气变好了！去年的产量增加了一倍？",
     ["今天早上下了大雨。", "我们在家里看书。", "下午天气变好了！", "去年的产量增加了一倍？"]),
    ("भारत एक देश है। यह बहुत बड़ा है।", ["भारत एक देश है।", "यह बहुत बड़ा है।"]),
    ("هل أنت بخير؟ نعم أنا بخير.", ["هل أنت بخير؟", "نعم أنا بخير."]),
    ("Dr. Smith met J. R. R. Tolkien in the U.S. in 1950. It was 3.5 km away!",
     ["Dr. Smith met J. R. R. Tolkien in the U.S. in 1950.", "It was 3.5 km away!"]),
])
def test_terminators_of_every_script_and_lower_case_starts(text, expected):
    assert split_sentences(text) == expected


def test_wrapped_prose_keeps_its_sentences_and_lines_mode_splits_every_line():
    wrapped = "The port opened in 1900 and it\ngrew quickly. Today it handles\ngrain."
    assert split_sentences(wrapped) == ["The port opened in 1900 and it grew quickly.", "Today it handles grain."]
    doc = (FIXTURES / "corpus_en_nopunct.txt").read_text(encoding="utf-8").split("\n\n")[0]
    assert split_sentences(doc, lines=True) == ["History of the port", "The port opened in 1900",
                                                 "It grew quickly after the railway came",
                                                 "Today it handles grain and timber"]


def test_the_chinese_corpus_has_several_sentences_in_every_document():
    docs = list(read_documents([FIXTURES / "corpus_zh.txt"]))
    counts = [len(split_sentences(d.text)) for d in docs]
    assert len(docs) == 12 and min(counts) >= 2, counts


def test_the_chinese_corpus_gives_pretraining_samples(tmp_path):
    from bertforge.config.pretrain import PretrainConfig
    from bertforge.data.fetch import fetch
    from bertforge.data.prepare import prepare
    from bertforge.data.source import CorpusSource

    tok = fetch("minilm")  # uncased BERT WordPiece with Chinese-character handling
    stats = prepare([FIXTURES / "corpus_zh.txt"], tok, tmp_path / "data", workers=1, max_seq_length=64,
                    progress=False)
    assert stats.documents == 12 and stats.single_sentence_documents == 0
    source = CorpusSource(PretrainConfig.from_flat(data_dir=str(tmp_path / "data"), tokenizer=str(tok),
                                                   micro_batch=4, global_batch=4, max_seq_length=64,
                                                   eval_fraction=0.3), 0, 1)
    source.start()
    assert len(source.train) > 0 and len(source.held_out) > 0
    assert source.next_batch().num_samples == 4


# ---- BERT's input format: one sentence per line, a blank line between documents (`prepare --format lines`) ---------
def _lines_corpus(path, n_docs):
    """n_docs documents of 2-5 lines each, lower case without punctuation, built from the handed fixture's lines."""
    lines = [s for s in (FIXTURES / "corpus_en_nopunct.txt").read_text(encoding="utf-8").lower().splitlines() if s]
    docs = ["\n".join(f"{lines[(d + k) % len(lines)]} {d}" for k in range(2 + d % 4)) for d in range(n_docs)]
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return [2 + d % 4 for d in range(n_docs)]


def test_handed_sentence_per_line_corpus_prepared_with_format_lines(tmp_path):
    from bertforge.data.fetch import fetch
    from bertforge.data.indexed import IndexedDataset
    from bertforge.data.prepare import prepare

    tok = fetch("minilm")
    src = FIXTURES / "corpus_en_nopunct.txt"
    prose = prepare([src], tok, tmp_path / "prose", workers=1, max_seq_length=64, progress=False)
    assert prose.documents == 2 and prose.single_sentence_documents == 2  # no punctuation: one sentence each
    stats = prepare([src], tok, tmp_path / "lines", format="lines", workers=1, max_seq_length=64, progress=False)
    assert (stats.documents, stats.sentences, stats.single_sentence_documents) == (2, 7, 0)
    ds = IndexedDataset(tmp_path / "lines")
    assert [len(ds.document(d)) for d in range(2)] == [4, 3]


def test_format_lines_cuts_large_files_at_blank_lines_and_gives_samples(tmp_path):
    from bertforge.config.pretrain import PretrainConfig
    from bertforge.data.fetch import fetch
    from bertforge.data.indexed import IndexedDataset
    from bertforge.data.prepare import prepare
    from bertforge.data.source import CorpusSource

    tok = fetch("minilm")
    src = tmp_path / "bert_format.txt"
    want = _lines_corpus(src, 300)
    runs = {w: prepare([src], tok, tmp_path / f"w{w}", format="lines", workers=w, shard_bytes=2000,
                       max_seq_length=64, progress=False) for w in (1, 2)}
    assert runs[1].tasks > 5 and runs[1].documents == 300 and runs[1].sentences == sum(want)
    ds = IndexedDataset(tmp_path / "w1")
    assert [len(ds.document(d)) for d in range(ds.num_docs)] == want  # no document cut in two by a piece
    names = sorted(p.name for p in (tmp_path / "w1").glob("shard_*")) + ["unigram.npy"]
    assert names == sorted(p.name for p in (tmp_path / "w2").glob("shard_*")) + ["unigram.npy"]
    for name in names:
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes(), name
    assert ds.meta["dataset_id"] == IndexedDataset(tmp_path / "w2").meta["dataset_id"]
    source = CorpusSource(PretrainConfig.from_flat(data_dir=str(tmp_path / "w1"), tokenizer=str(tok), micro_batch=4,
                                                   global_batch=4, max_seq_length=64, eval_fraction=0.1), 0, 1)
    source.start()
    assert len(source.train) > 0 and len(source.held_out) > 0
    assert source.next_batch().num_samples == 4
