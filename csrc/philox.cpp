// Philox-4x32-10 (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3"; the round and key constants of
// triton.language.random) for the CPU path's dropout masks: the same words the Triton kernels draw, so a run with
// --kernels none keeps the same elements as one with the kernels. Reference: kernels/reference.py `philox4x32` (pure
// torch), compared bit for bit in tests/engine/test_csrc_philox.py.
#include <cstdint>
#include <stdexcept>
#include <string>

#include "helpers.h"

namespace bertforge {
namespace {

using Counters = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

constexpr uint32_t kRound0 = 0xD2511F53u, kRound1 = 0xCD9E8D57u, kKey0 = 0x9E3779B9u, kKey1 = 0xBB67AE85u;

inline void philox(uint32_t k0, uint32_t k1, uint32_t c[4]) {
    for (int r = 0; r < 10; ++r) {
        const uint64_t pb = static_cast<uint64_t>(kRound1) * c[2];
        const uint64_t pa = static_cast<uint64_t>(kRound0) * c[0];
        const uint32_t n0 = static_cast<uint32_t>(pb >> 32) ^ c[1] ^ k0;
        const uint32_t n2 = static_cast<uint32_t>(pa >> 32) ^ c[3] ^ k1;
        c[1] = static_cast<uint32_t>(pb);
        c[3] = static_cast<uint32_t>(pa);
        c[0] = n0;
        c[2] = n2;
        k0 += kKey0;
        k1 += kKey1;
    }
}

// Philox words of every counter i, passed to emit(out + width * i, words): the shared loop of the entry points;
// out is (n, width).
template <typename Out, typename Emit>
py::array_t<Out> over_counters(uint32_t k0, uint32_t k1, const Counters& c0, const Counters& c1, const Counters& c2,
                               const Counters& c3, const char* name, int64_t width, Emit emit) {
    const int64_t n = c0.size();
    if (c0.ndim() != 1 || c1.ndim() != 1 || c2.ndim() != 1 || c3.ndim() != 1 || c1.size() != n || c2.size() != n ||
        c3.size() != n)
        throw std::invalid_argument(std::string(name) + ": counters must be four 1-D arrays of one length");
    py::array_t<Out> out({n, width});
    const int64_t *a = c0.data(), *b = c1.data(), *d = c2.data(), *e = c3.data();
    Out* o = out.mutable_data();
    {
        py::gil_scoped_release release;
        for (int64_t i = 0; i < n; ++i) {
            uint32_t c[4] = {static_cast<uint32_t>(a[i]), static_cast<uint32_t>(b[i]), static_cast<uint32_t>(d[i]),
                             static_cast<uint32_t>(e[i])};
            philox(k0, k1, c);
            emit(o + width * i, c);
        }
    }
    return out;
}

// key (k0, k1) and counters c0..c3 (n,) int64, each word in [0, 2^32) -> (n, 4) int64 words.
py::array_t<int64_t> philox_words(uint32_t k0, uint32_t k1, Counters c0, Counters c1, Counters c2, Counters c3) {
    return over_counters<int64_t>(k0, k1, c0, c1, c2, c3, "philox_words", 4, [](int64_t* o, const uint32_t* c) {
        for (int w = 0; w < 4; ++w) o[w] = c[w];
    });
}

// As philox_words, then the kernels' dropout keep flags (kernels/reference.py `_keep_flags`):
//   bits 8:  (n, 16) bool, flag 4w + k = byte k of word w (the 16 bytes little-endian) >= threshold;
//   bits 24: (n, 4) bool, flag w = (word w >> 8) >= threshold.
py::array_t<bool> philox_keep(uint32_t k0, uint32_t k1, Counters c0, Counters c1, Counters c2, Counters c3,
                              uint32_t threshold, int bits) {
    if (bits != 8 && bits != 24)
        throw std::invalid_argument("philox_keep: bits must be 8 or 24, got " + std::to_string(bits));
    if (threshold >= (1u << bits))
        throw std::invalid_argument("philox_keep: threshold " + std::to_string(threshold) + " must be below 2^" +
                                    std::to_string(bits));
    if (bits == 8)
        return over_counters<bool>(k0, k1, c0, c1, c2, c3, "philox_keep", 16, [threshold](bool* o, const uint32_t* c) {
            for (int w = 0; w < 4; ++w)
                for (int k = 0; k < 4; ++k) o[4 * w + k] = ((c[w] >> (8 * k)) & 0xFFu) >= threshold;
        });
    return over_counters<bool>(k0, k1, c0, c1, c2, c3, "philox_keep", 4, [threshold](bool* o, const uint32_t* c) {
        for (int w = 0; w < 4; ++w) o[w] = (c[w] >> 8) >= threshold;
    });
}

}  // namespace

void register_philox(py::module_& m) {
    m.def("philox_words", &philox_words, py::arg("k0"), py::arg("k1"), py::arg("c0"), py::arg("c1"), py::arg("c2"),
          py::arg("c3"), "Philox-4x32-10 words (n, 4) int64 of key (k0, k1) over counters c0..c3 (n,) int64");
    m.def("philox_keep", &philox_keep, py::arg("k0"), py::arg("k1"), py::arg("c0"), py::arg("c1"), py::arg("c2"),
          py::arg("c3"), py::arg("threshold"), py::arg("bits"),
          "dropout keep flags of Philox-4x32-10: bits 8 -> (n, 16) bool, byte >= threshold for each of the 16 bytes "
          "(little-endian); bits 24 -> (n, 4) bool, (word >> 8) >= threshold");
}

}  // namespace bertforge
