// Document grouping for MLM-only training: consecutive documents packed into blocks of exactly block_tokens units,
// crossing document boundaries, nothing dropped (every block full except the last). The layout of RoBERTa's
// FULL-SENTENCES inputs (Liu et al. 2019, section 4.2: contiguous text of one or more documents, an extra separator
// token between documents) cut as Hugging Face's run_mlm `group_texts` cuts its concatenated stream.
// Python facade + numpy reference: engine/data/grouping.py (`group_documents_ref`); tests compare both.
//
// Input: doc_len (n_docs,) int64 tokens per document, each >= 1, documents in stream order.
// The stream is doc 0, [SEP], doc 1, [SEP], ..., doc n-1 (separate = true) or the documents alone (false): a
// document's units are its tokens 0..len-1 and, when a separator follows it, unit len (the separator).
// Output: (pieces (n_pieces, 3) int64 rows [doc, begin, end], block_offsets (n_blocks + 1,) int64)
//   a piece is the half-open unit range [begin, end) of one document inside one block, in stream order; block k
//   holds pieces block_offsets[k] .. block_offsets[k + 1] - 1, whose units add up to block_tokens (the last block:
//   1 .. block_tokens). end == doc_len[doc] + 1 means the piece ends with the document's separator.
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "helpers.h"

namespace bertforge {
namespace {

using I64Array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

py::tuple group_documents(I64Array doc_len, int64_t block_tokens, bool separate) {
    if (doc_len.ndim() != 1) throw std::invalid_argument("group_documents: doc_len must be 1-D");
    if (block_tokens < 1) throw std::invalid_argument("group_documents: block_tokens must be >= 1");
    const int64_t n_docs = doc_len.shape(0);
    const int64_t* len = doc_len.data();
    for (int64_t d = 0; d < n_docs; ++d)
        if (len[d] < 1)
            throw std::invalid_argument("group_documents: document " + std::to_string(d) + " is empty");
    std::vector<int64_t> pieces, offsets{0};
    {
        py::gil_scoped_release release;
        pieces.reserve(static_cast<size_t>(n_docs) * 3 * 2);
        int64_t fill = 0;  // units in the open block
        for (int64_t d = 0; d < n_docs; ++d) {
            const int64_t units = len[d] + (separate && d + 1 < n_docs ? 1 : 0);
            for (int64_t pos = 0; pos < units;) {
                const int64_t take = std::min(units - pos, block_tokens - fill);
                pieces.insert(pieces.end(), {d, pos, pos + take});
                pos += take;
                fill += take;
                if (fill == block_tokens) {
                    offsets.push_back(static_cast<int64_t>(pieces.size() / 3));
                    fill = 0;
                }
            }
        }
        if (fill > 0) offsets.push_back(static_cast<int64_t>(pieces.size() / 3));  // the corpus tail
    }
    const int64_t rows = static_cast<int64_t>(pieces.size() / 3);
    py::array_t<int64_t> out_pieces({rows, int64_t{3}});
    std::copy(pieces.begin(), pieces.end(), out_pieces.mutable_data());
    py::array_t<int64_t> out_offsets(static_cast<py::ssize_t>(offsets.size()));
    std::copy(offsets.begin(), offsets.end(), out_offsets.mutable_data());
    return py::make_tuple(out_pieces, out_offsets);
}

}  // namespace

void register_grouping(py::module_& m) {
    m.def("group_documents", &group_documents, py::arg("doc_len"), py::arg("block_tokens"), py::arg("separate"),
          "doc_len (n_docs,) -> (pieces (n, 3) int64 [doc, begin, end], block_offsets (n_blocks + 1,) int64): "
          "documents packed into full blocks; see csrc/grouping.cpp");
}

}  // namespace bertforge
