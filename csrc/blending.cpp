// Blending indices of a weighted mixture of datasets: Megatron-LM's `build_blending_indices`
// (megatron/core/datasets/helpers.cpp; used by its BlendedDataset), rewritten: sample i goes to the dataset whose
// count lags its target share the most, error_d = w_d * max(i, 1) - count_d, ties to the lower index. Greedy
// error minimisation keeps every prefix within one sample of its target (|count_d(n) - w_d n| < 1 for weights
// that sum to 1), hence any window of n samples within two.
// Python facade + numpy reference: engine/data/blend.py (`blending_indices_ref`); tests compare both.
//
// Input: weights (n_datasets,) float64 > 0, normalised to sum 1 here; size: samples to assign.
// Output: (dataset_index (size,) int16, dataset_sample_index (size,) int64): the dataset of sample i and how many
// samples of that dataset come before it.
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "helpers.h"

namespace bertforge {
namespace {

using F64Array = py::array_t<double, py::array::c_style | py::array::forcecast>;

py::tuple build_blending_indices(F64Array weights, int64_t size) {
    if (weights.ndim() != 1 || weights.shape(0) < 1 || weights.shape(0) > 32767)
        throw std::invalid_argument("build_blending_indices: weights must be 1-D with 1..32767 entries");
    if (size < 0) throw std::invalid_argument("build_blending_indices: size must be >= 0");
    const int64_t n = weights.shape(0);
    std::vector<double> w(weights.data(), weights.data() + n);
    double total = 0.0;
    for (double x : w) {
        if (!(x > 0.0)) throw std::invalid_argument("build_blending_indices: weights must be > 0");
        total += x;
    }
    for (double& x : w) x /= total;
    py::array_t<int16_t> dataset_index(size);
    py::array_t<int64_t> sample_index(size);
    int16_t* di = dataset_index.mutable_data();
    int64_t* si = sample_index.mutable_data();
    {
        py::gil_scoped_release release;
        std::vector<int64_t> count(n, 0);
        for (int64_t i = 0; i < size; ++i) {
            const double seen = static_cast<double>(i > 1 ? i : 1);
            int64_t best = 0;
            double best_error = w[0] * seen - static_cast<double>(count[0]);
            for (int64_t d = 1; d < n; ++d) {
                const double error = w[d] * seen - static_cast<double>(count[d]);
                if (error > best_error) {
                    best_error = error;
                    best = d;
                }
            }
            di[i] = static_cast<int16_t>(best);
            si[i] = count[best]++;
        }
    }
    return py::make_tuple(dataset_index, sample_index);
}

}  // namespace

void register_blending(py::module_& m) {
    m.def("build_blending_indices", &build_blending_indices, py::arg("weights"), py::arg("size"),
          "weights (n,) float64, size -> (dataset_index (size,) int16, dataset_sample_index (size,) int64)");
}

}  // namespace bertforge
