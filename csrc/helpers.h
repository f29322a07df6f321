// Shared declarations for the bertforge pybind11 extension (`engine._csrc`).
// Each helper lives in its own .cpp file and registers its functions through one register_* call below;
// module.cpp holds the single PYBIND11_MODULE. Helpers take and return numpy arrays only (no libtorch).
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace bertforge {
void register_offsets(py::module_& m);     // offsets.cpp: lengths -> cu_seqlens / unpad gather indices
void register_sample_map(py::module_& m);  // sample_map.cpp: BERT NSP / ALBERT SOP sentence-pair sample maps
void register_grouping(py::module_& m);    // grouping.cpp: documents packed into full blocks (MLM only)
void register_shards(py::module_& m);      // shards.cpp: token files mapped with descriptors closed + gather
void register_philox(py::module_& m);      // philox.cpp: Philox-4x32-10 words / dropout keep flags (CPU path)
void register_philox_rows(py::module_& m);  // philox_rows.cpp: dropout masks of whole rows, vectorised
void register_blending(py::module_& m);    // blending.cpp: weighted mixture of datasets (Megatron blending indices)
}  // namespace bertforge
