// BERT next-sentence-prediction sample map: from sentence boundaries, the list of pretraining pairs
// [CLS] A [SEP] B [SEP] as global token ranges. Algorithm after create_instances_from_document in Google's BERT
// create_pretraining_data.py (own code), with per-chunk targets and an explicit IsNext extension (see below).
// The same builder makes ALBERT's sentence-order-prediction (SOP) map (build_sop_map, see the end of this comment).
// Python facade + line-for-line reference: engine/data/sample_map.py (`build_sample_map_ref`); tests compare both.
//
// Inputs (numpy int64, one entry per sentence of the selected documents, documents in order):
//   sent_start (n_sent,)   global token position of each sentence's first token (sentences of a document adjacent)
//   sent_len   (n_sent,)   tokens per sentence, each >= 1
//   doc_offsets (n_docs+1,) sentence offsets of each document, every document non-empty
// Output: (map (n_samples, 5) int64 rows [a_start, a_end, b_start, b_end, is_random], docs_skipped, tail_dropped)
//   token ranges are half-open; is_random = 1 for NotNext.
//
// Per document d with n >= 2 sentences (documents with fewer are only NotNext partners; counted in docs_skipped),
// rng = SplitMix64 seeded with mix(mix(seed) ^ d):
//   target = max_tokens (= max_seq_length - 3), or with probability short_seq_prob randint(2, max_tokens); drawn per chunk
//   sentences are gathered into a chunk until its tokens reach target (taking the last sentence too when only that
//   one would be left) or the document ends; then
//   a_count = 1 if the chunk has 1 sentence else randint(1, m - 1);  A = chunk[:a_count]
//   (a chunk of one sentence at the document's end cannot have a next sentence: it is dropped, tail_dropped++,
//    before any draw, so that each sample's label is a fresh fair draw and IsNext/NotNext stay unbiased)
//   is_random = uniform() < nsp_prob
//   IsNext: B = chunk[a_count:]; when that is empty, B = the following sentences of the document until
//           len(A) + len(B) >= target (at least one)
//   NotNext: another document r = randint(0, n_docs - 2), skipping d; start = randint(0, len(r) - 1);
//            B = sentences from start until len(B) >= target - len(A) (at least one); the chunk's unused
//            sentences chunk[a_count:] are put back (the next chunk starts after A)
//   truncation: while len(A) + len(B) > max_tokens remove a token from the longer side (B on ties), from the front
//               or the back by one coin; coins are the bits of one 64-bit draw, LSB first, redrawn when used up.
//
// SOP (ALBERT, Lan et al. 2020, section 4.2; sop = true): the same chunks and draws, but the label coin
// (probability swap_prob, ALBERT's 0.5, in the place of nsp_prob) swaps the segments instead of fetching B from
// another document: B is always the IsNext continuation above, so A and B are consecutive text of one document, and
// a swapped pair is emitted as [B, A] (label 1; 0 = in order), then truncated as above. Documents with fewer than two
// sentences are unused (docs_skipped); one document is enough.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "helpers.h"

namespace bertforge {
namespace {

inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// SplitMix64 (Steele, Lea, Flood 2014); engine/data/sample_map.py `SplitMix64` is the identical Python version.
struct SplitMix64 {
    uint64_t state;
    SplitMix64(uint64_t seed, uint64_t stream) : state(mix64(mix64(seed) ^ stream)) {}
    uint64_t next() {
        state += 0x9E3779B97F4A7C15ULL;
        return mix64(state);
    }
    double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }   // [0, 1)
    int64_t randint(int64_t lo, int64_t hi) {                                       // inclusive
        return lo + static_cast<int64_t>(next() % static_cast<uint64_t>(hi - lo + 1));
    }
};

struct Builder {
    const int64_t *start, *len, *doc;
    int64_t n_docs, max_tokens;
    double short_seq_prob, nsp_prob;  // nsp_prob: NotNext (NSP) or swap (SOP) probability
    uint64_t seed;
    std::vector<int64_t> out;
    int64_t docs_skipped = 0, tail_dropped = 0;
    bool sop = false;

    int64_t tokens(int64_t s0, int64_t s1) const { return start[s1 - 1] + len[s1 - 1] - start[s0]; }

    int64_t draw_target(SplitMix64& rng) const {
        int64_t target = max_tokens;
        if (rng.uniform() < short_seq_prob) target = rng.randint(2, max_tokens);
        return target;
    }

    void emit(SplitMix64& rng, int64_t a0, int64_t a1, int64_t b0, int64_t b1, bool is_random) {
        uint64_t bits = 0;
        int nbits = 0;
        while ((a1 - a0) + (b1 - b0) > max_tokens) {
            if (nbits == 0) { bits = rng.next(); nbits = 64; }
            const bool front = bits & 1ULL;
            bits >>= 1;
            --nbits;
            if (a1 - a0 > b1 - b0) { if (front) ++a0; else --a1; }
            else { if (front) ++b0; else --b1; }
        }
        out.insert(out.end(), {a0, a1, b0, b1, static_cast<int64_t>(is_random)});
    }

    void document(int64_t d) {
        const int64_t first = doc[d], n = doc[d + 1] - doc[d];
        if (n < 2) { ++docs_skipped; return; }
        SplitMix64 rng(seed, static_cast<uint64_t>(d));
        int64_t target = draw_target(rng), chunk_start = 0, chunk_tokens = 0;
        for (int64_t i = 0; i < n; ++i) {
            chunk_tokens += len[first + i];
            if (i != n - 1 && (chunk_tokens < target || i == n - 2)) continue;  // never leave a lone last sentence
            const int64_t m = i - chunk_start + 1;
            if (m == 1 && i == n - 1) { ++tail_dropped; break; }
            const int64_t a_count = m == 1 ? 1 : rng.randint(1, m - 1);
            const int64_t a_s0 = first + chunk_start, a_s1 = a_s0 + a_count;
            const int64_t la = tokens(a_s0, a_s1);
            const bool coin = rng.uniform() < nsp_prob;
            const bool is_random = coin && !sop, swapped = coin && sop;
            int64_t b_s0 = 0, b_s1 = 0;
            if (!is_random) {
                if (m > a_count) {
                    b_s0 = a_s1; b_s1 = first + i + 1;
                } else {  // m == 1 and i + 1 < n: B = the following sentences
                    int64_t j = i + 1, lb = 0;
                    do { lb += len[first + j]; ++j; } while (j < n && la + lb < target);
                    b_s0 = first + i + 1; b_s1 = first + j;
                    i = j - 1;
                }
            }
            if (is_random) {
                int64_t r = rng.randint(0, n_docs - 2);
                if (r >= d) ++r;
                const int64_t rn = doc[r + 1] - doc[r];
                const int64_t rs = rng.randint(0, rn - 1);
                int64_t j = rs, lb = 0;
                do { lb += len[doc[r] + j]; ++j; } while (j < rn && lb < target - la);
                b_s0 = doc[r] + rs; b_s1 = doc[r] + j;
                i -= m - a_count;  // put the chunk's unused sentences back
            }
            if (swapped)
                emit(rng, start[b_s0], start[b_s0] + tokens(b_s0, b_s1), start[a_s0], start[a_s0] + la, true);
            else
                emit(rng, start[a_s0], start[a_s0] + la, start[b_s0], start[b_s0] + tokens(b_s0, b_s1), is_random);
            chunk_start = i + 1;
            chunk_tokens = 0;
            target = draw_target(rng);
        }
    }
};

using I64Array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

py::tuple build_pairs(const char* name, I64Array sent_start, I64Array sent_len, I64Array doc_offsets,
                      int64_t max_seq_length, double short_seq_prob, double label_prob, uint64_t seed, bool sop) {
    const std::string fn = std::string(name) + ": ";
    if (sent_start.ndim() != 1 || sent_len.ndim() != 1 || doc_offsets.ndim() != 1)
        throw std::invalid_argument(fn + "inputs must be 1-D");
    const int64_t n_sent = sent_start.shape(0), n_docs = doc_offsets.shape(0) - 1;
    if (sent_len.shape(0) != n_sent) throw std::invalid_argument(fn + "sent_start/sent_len differ");
    if (max_seq_length < 5) throw std::invalid_argument(fn + "max_seq_length must be >= 5");
    if (n_docs < (sop ? 1 : 2))
        throw std::invalid_argument(fn + (sop ? "need at least one document"
                                              : "need at least two documents for NotNext pairs"));
    const int64_t* doc = doc_offsets.data();
    const int64_t* len = sent_len.data();
    if (doc[0] != 0 || doc[n_docs] != n_sent)
        throw std::invalid_argument(fn + "doc_offsets must run from 0 to n_sentences");
    for (int64_t d = 0; d < n_docs; ++d)
        if (doc[d + 1] <= doc[d])
            throw std::invalid_argument(fn + "document " + std::to_string(d) + " has no sentences");
    for (int64_t s = 0; s < n_sent; ++s)
        if (len[s] < 1) throw std::invalid_argument(fn + "sentence " + std::to_string(s) + " is empty");
    Builder b{sent_start.data(), len, doc, n_docs, max_seq_length - 3, short_seq_prob, label_prob, seed, {}};
    b.sop = sop;
    {
        py::gil_scoped_release release;
        b.out.reserve(static_cast<size_t>(n_sent) * 2);
        for (int64_t d = 0; d < n_docs; ++d) b.document(d);
    }
    const int64_t rows = static_cast<int64_t>(b.out.size() / 5);
    // the result takes over the builder's buffer (no second copy of the map in memory)
    auto* buffer = new std::vector<int64_t>(std::move(b.out));
    py::capsule owner(buffer, [](void* p) { delete static_cast<std::vector<int64_t>*>(p); });
    py::array_t<int64_t> result({rows, int64_t{5}}, buffer->data(), owner);
    return py::make_tuple(result, b.docs_skipped, b.tail_dropped);
}

py::tuple build_sample_map(I64Array sent_start, I64Array sent_len, I64Array doc_offsets, int64_t max_seq_length,
                           double short_seq_prob, double nsp_prob, uint64_t seed) {
    return build_pairs("build_sample_map", sent_start, sent_len, doc_offsets, max_seq_length, short_seq_prob,
                       nsp_prob, seed, false);
}

py::tuple build_sop_map(I64Array sent_start, I64Array sent_len, I64Array doc_offsets, int64_t max_seq_length,
                        double short_seq_prob, double swap_prob, uint64_t seed) {
    return build_pairs("build_sop_map", sent_start, sent_len, doc_offsets, max_seq_length, short_seq_prob,
                       swap_prob, seed, true);
}

}  // namespace

void register_sample_map(py::module_& m) {
    m.def("build_sample_map", &build_sample_map, py::arg("sent_start"), py::arg("sent_len"), py::arg("doc_offsets"),
          py::arg("max_seq_length"), py::arg("short_seq_prob"), py::arg("nsp_prob"), py::arg("seed"),
          "sentence boundaries -> (map (n, 5) int64 [a_start, a_end, b_start, b_end, is_random], docs_skipped, "
          "tail_dropped); see csrc/sample_map.cpp");
    m.def("build_sop_map", &build_sop_map, py::arg("sent_start"), py::arg("sent_len"), py::arg("doc_offsets"),
          py::arg("max_seq_length"), py::arg("short_seq_prob"), py::arg("swap_prob"), py::arg("seed"),
          "sentence boundaries -> (map (n, 5) int64 [a_start, a_end, b_start, b_end, swapped], docs_skipped, "
          "tail_dropped): ALBERT's sentence-order pairs; see csrc/sample_map.cpp");
}

}  // namespace bertforge
