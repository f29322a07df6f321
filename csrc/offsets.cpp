// Offsets for unpadded ("varlen") batches, as FlashAttention's bert_padding.unpad_input computes them.
// Reference: engine/csrc.py (`unpad_offsets_ref`, numpy). Used by the collator on the CPU side.
#include <cstdint>
#include <stdexcept>
#include <string>

#include "helpers.h"

namespace bertforge {
namespace {

// lengths: (batch,) int32/int64, each in [0, seq_len].
// Returns (cu_seqlens (batch + 1,) int32, indices (total,) int64 flat positions into a (batch, seq_len) grid,
//          max_seqlen int).
py::tuple unpad_offsets(py::array_t<int64_t, py::array::c_style | py::array::forcecast> lengths, int64_t seq_len) {
    if (lengths.ndim() != 1) throw std::invalid_argument("unpad_offsets: lengths must be 1-D");
    if (seq_len < 0) throw std::invalid_argument("unpad_offsets: seq_len must be >= 0");
    const int64_t batch = lengths.shape(0);
    auto len = lengths.unchecked<1>();
    py::array_t<int32_t> cu_seqlens(batch + 1);
    auto cu = cu_seqlens.mutable_unchecked<1>();
    int64_t total = 0, max_len = 0;
    cu(0) = 0;
    for (int64_t b = 0; b < batch; ++b) {
        const int64_t n = len(b);
        if (n < 0 || n > seq_len)
            throw std::invalid_argument("unpad_offsets: length " + std::to_string(n) + " at row " + std::to_string(b) +
                                        " is outside [0, " + std::to_string(seq_len) + "]");
        total += n;
        if (total > INT32_MAX) throw std::overflow_error("unpad_offsets: total tokens exceed int32 range");
        cu(b + 1) = static_cast<int32_t>(total);
        if (n > max_len) max_len = n;
    }
    py::array_t<int64_t> indices(total);
    auto idx = indices.mutable_unchecked<1>();
    {
        py::gil_scoped_release release;
        int64_t k = 0;
        for (int64_t b = 0; b < batch; ++b)
            for (int64_t t = 0; t < len(b); ++t) idx(k++) = b * seq_len + t;
    }
    return py::make_tuple(cu_seqlens, indices, max_len);
}

}  // namespace

void register_offsets(py::module_& m) {
    m.def("unpad_offsets", &unpad_offsets, py::arg("lengths"), py::arg("seq_len"),
          "lengths (B,) -> (cu_seqlens (B+1,) int32, indices (total,) int64 into a flattened (B, seq_len) grid, "
          "max_seqlen)");
}

}  // namespace bertforge
