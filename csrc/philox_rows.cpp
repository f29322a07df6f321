// Dropout masks of whole rows from Philox-4x32-10, many calls at once (the CPU path's fast form of philox.cpp's
// philox_keep). Row r of a call holds width[r] elements; element t of row r is decided by Philox call t / g of key
// (k0, k1) and counter (c0[r] + t / g mod 2^32, c1[r], c2[r], c3[r]), g = 16 at 8 bits (byte t % 16 of the call's
// four words in little-endian order) or 4 at 24 bits (word t % 4, top 24 bits): kernels/reference.py's rule
// (`_keep_flags`), so a row is a LayerNorm-epilogue row (c0 = 0, c1 = 0, c2/c3 = row id) or one query row of
// attention (c0 = query * 16384, c1 = head, c2/c3 = the sequence's row id). The rows are concatenated in the output.
// Reference: kernels/reference.py `philox4x32` + `_keep_flags` (pure torch), compared bit for bit in
// tests/engine/test_csrc_philox.py.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "helpers.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "philox_rows.cpp reads a Philox call's words as little-endian bytes"
#endif

// The Philox rounds as plain loops over kLanes calls, which the compiler turns into vector code (the 32x32 -> 64-bit
// multiplies into vpmuludq); on x86-64 with GCC built for AVX-512, AVX2 and the baseline, picked at load time.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define BERTFORGE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define BERTFORGE_CLONES
#endif

namespace bertforge {
namespace {

constexpr uint32_t kRound0 = 0xD2511F53u, kRound1 = 0xCD9E8D57u, kKey0 = 0x9E3779B9u, kKey1 = 0xBB67AE85u;
constexpr int64_t kLanes = 16;

using Ints = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

// Words of calls with counters (c0 + q, c1, c2, c3), q = 0 .. ncalls - 1 -> words[4 q + w] (interleaved, so that the
// bytes of words[] in memory are the calls' bytes in little-endian order). words holds ceil(ncalls / kLanes) * kLanes
// * 4 entries. The 32 x 32 -> 64-bit products of a round are two even/odd-lane multiplies of 64-bit vectors whose
// high halves are zero (vpmuludq); their low and high words are put back in place with masks and shifts.
typedef uint32_t U32x16 __attribute__((vector_size(64)));
typedef uint64_t U64x8 __attribute__((vector_size(64)));

BERTFORGE_CLONES void philox_calls(uint32_t k0, uint32_t k1, uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                   int64_t ncalls, uint32_t* words) {
    constexpr uint64_t kLow = 0xFFFFFFFFull;
    U32x16 lane;
    for (int l = 0; l < kLanes; ++l) lane[l] = static_cast<uint32_t>(l);
    for (int64_t base = 0; base < ncalls; base += kLanes) {
        U32x16 a = lane + (c0 + static_cast<uint32_t>(base)), b = lane * 0u + c1, c = lane * 0u + c2,
               d = lane * 0u + c3;
        uint32_t key0 = k0, key1 = k1;
        for (int r = 0; r < 10; ++r) {
            const U64x8 c64 = reinterpret_cast<U64x8>(c), a64 = reinterpret_cast<U64x8>(a);
            const U64x8 pb_even = (c64 & kLow) * kRound1, pb_odd = (c64 >> 32) * kRound1;
            const U64x8 pa_even = (a64 & kLow) * kRound0, pa_odd = (a64 >> 32) * kRound0;
            const U32x16 pb_lo = reinterpret_cast<U32x16>((pb_even & kLow) | (pb_odd << 32));
            const U32x16 pb_hi = reinterpret_cast<U32x16>((pb_even >> 32) | (pb_odd & ~kLow));
            const U32x16 pa_lo = reinterpret_cast<U32x16>((pa_even & kLow) | (pa_odd << 32));
            const U32x16 pa_hi = reinterpret_cast<U32x16>((pa_even >> 32) | (pa_odd & ~kLow));
            a = pb_hi ^ b ^ key0;
            c = pa_hi ^ d ^ key1;
            b = pb_lo;
            d = pa_lo;
            key0 += kKey0;
            key1 += kKey1;
        }
        uint32_t* out = words + 4 * base;
        for (int l = 0; l < kLanes; ++l) {
            out[4 * l] = a[l];
            out[4 * l + 1] = b[l];
            out[4 * l + 2] = c[l];
            out[4 * l + 3] = d[l];
        }
    }
}

// Rows [r0, r1) into out (their first element at out + start[r0]): on where kept, off where dropped.
template <typename Out>
void rows_range(uint32_t k0, uint32_t k1, const int64_t* c0, const int64_t* c1, const int64_t* c2, const int64_t* c3,
                const int64_t* width, const int64_t* start, int64_t r0, int64_t r1, uint32_t threshold, int bits,
                Out on, Out off, Out* out) {
    const int64_t group = bits == 8 ? 16 : 4;
    std::vector<uint32_t> words;
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = width[r], ncalls = (n + group - 1) / group;
        const size_t need = static_cast<size_t>((ncalls + kLanes - 1) / kLanes * kLanes * 4);
        if (words.size() < need) words.resize(need);
        philox_calls(static_cast<uint32_t>(k0), k1, static_cast<uint32_t>(c0[r]), static_cast<uint32_t>(c1[r]),
                     static_cast<uint32_t>(c2[r]), static_cast<uint32_t>(c3[r]), ncalls, words.data());
        Out* o = out + start[r];
        if (bits == 8) {
            const uint8_t* bytes = reinterpret_cast<const uint8_t*>(words.data());
            for (int64_t t = 0; t < n; ++t) o[t] = bytes[t] >= threshold ? on : off;
        } else {
            for (int64_t t = 0; t < n; ++t) o[t] = (words[t] >> 8) >= threshold ? on : off;
        }
    }
}

template <typename Out>
py::array_t<Out> philox_rows(uint32_t k0, uint32_t k1, const Ints& c0, const Ints& c1, const Ints& c2, const Ints& c3,
                             const Ints& width, uint32_t threshold, int bits, Out on, Out off, int threads,
                             const py::object& given, const char* name) {
    const int64_t rows = width.size();
    for (const Ints* a : {&c0, &c1, &c2, &c3, &width})
        if (a->ndim() != 1 || a->size() != rows)
            throw std::invalid_argument(std::string(name) +
                                        ": c0, c1, c2, c3 and width must be 1-D arrays of one length");
    if (bits != 8 && bits != 24)
        throw std::invalid_argument(std::string(name) + ": bits must be 8 or 24, got " + std::to_string(bits));
    if (threshold >= (1u << bits))
        throw std::invalid_argument(std::string(name) + ": threshold " + std::to_string(threshold) +
                                    " must be below 2^" + std::to_string(bits));
    const int64_t* w = width.data();
    std::vector<int64_t> start(rows + 1, 0);
    for (int64_t r = 0; r < rows; ++r) {
        if (w[r] < 0) throw std::invalid_argument(std::string(name) + ": widths must be >= 0");
        if (w[r] > std::numeric_limits<int64_t>::max() - start[r])  // a wrapped sum would size out too small
            throw std::invalid_argument(std::string(name) + ": the widths add up past 2^63 - 1");
        start[r + 1] = start[r] + w[r];
    }
    py::array_t<Out> out;
    if (given.is_none()) {
        out = py::array_t<Out>(start[rows]);
    } else {  // the caller's buffer: exactly a contiguous 1-D array of Out of the rows' total width
        if (!py::isinstance<py::array_t<Out>>(given))
            throw std::invalid_argument(std::string(name) + ": out must be a 1-D " +
                                        (sizeof(Out) == 1 ? "bool" : "float32") + " array");
        out = given.cast<py::array_t<Out>>();
        if (out.ndim() != 1 || out.size() != start[rows] || !(out.flags() & py::array::c_style) || !out.writeable())
            throw std::invalid_argument(std::string(name) + ": out must be a writable contiguous 1-D array of " +
                                        std::to_string(start[rows]) + " elements");
    }
    Out* o = out.mutable_data();
    const int64_t *a = c0.data(), *b = c1.data(), *c = c2.data(), *d = c3.data();
    {
        py::gil_scoped_release release;
        // contiguous row ranges of about equal element counts, one per thread; small calls stay on this thread
        const int64_t n_threads = std::max<int64_t>(1, std::min<int64_t>({threads, rows, start[rows] / 65536 + 1}));
        std::vector<int64_t> cut(n_threads + 1, rows);
        cut[0] = 0;
        for (int64_t k = 1, r = 0; k < n_threads; ++k) {
            while (r < rows && start[r] < start[rows] * k / n_threads) ++r;
            cut[k] = r;
        }
        // a worker's exception (std::bad_alloc of its Philox words) is raised here after the join, not
        // std::terminate in its thread
        std::vector<std::exception_ptr> failed(n_threads);
        auto part = [&](int64_t k) {
            try {
                rows_range<Out>(k0, k1, a, b, c, d, w, start.data(), cut[k], cut[k + 1], threshold, bits, on, off, o);
            } catch (...) {
                failed[k] = std::current_exception();
            }
        };
        std::vector<std::thread> pool;
        for (int64_t k = 1; k < n_threads; ++k) pool.emplace_back(part, k);
        part(0);
        for (auto& t : pool) t.join();
        for (auto& e : failed)
            if (e) std::rethrow_exception(e);
    }
    return out;
}

}  // namespace

void register_philox_rows(py::module_& m) {
    m.def(
        "philox_keep_rows",
        [](uint32_t k0, uint32_t k1, Ints c0, Ints c1, Ints c2, Ints c3, Ints width, uint32_t threshold, int bits,
           int threads, py::object out) {
            return philox_rows<bool>(k0, k1, c0, c1, c2, c3, width, threshold, bits, true, false, threads, out,
                                     "philox_keep_rows");
        },
        py::arg("k0"), py::arg("k1"), py::arg("c0"), py::arg("c1"), py::arg("c2"), py::arg("c3"), py::arg("width"),
        py::arg("threshold"), py::arg("bits"), py::arg("threads") = 1, py::arg("out") = py::none(),
        "dropout keep flags of rows (R,) -> (sum(width),) bool, row r's element t from the Philox call with counter "
        "(c0[r] + t // g, c1[r], c2[r], c3[r]), g = 16 at 8 bits (byte t % 16 >= threshold), 4 at 24 bits; written "
        "into out when given");
    m.def(
        "philox_multiplier_rows",
        [](uint32_t k0, uint32_t k1, Ints c0, Ints c1, Ints c2, Ints c3, Ints width, uint32_t threshold, int bits,
           float scale, int threads, py::object out) {
            return philox_rows<float>(k0, k1, c0, c1, c2, c3, width, threshold, bits, scale, 0.0f, threads, out,
                                      "philox_multiplier_rows");
        },
        py::arg("k0"), py::arg("k1"), py::arg("c0"), py::arg("c1"), py::arg("c2"), py::arg("c3"), py::arg("width"),
        py::arg("threshold"), py::arg("bits"), py::arg("scale"), py::arg("threads") = 1, py::arg("out") = py::none(),
        "as philox_keep_rows, as float32 dropout multipliers: scale where kept, 0 where dropped");
}

}  // namespace bertforge
