// The one PYBIND11_MODULE of bertforge's C++ data helpers. Python facade: engine/csrc.py.
#include "helpers.h"

PYBIND11_MODULE(_csrc, m) {
    m.doc() = "bertforge C++ data-loading helpers (numpy in, numpy out)";
    bertforge::register_offsets(m);
    bertforge::register_sample_map(m);
    bertforge::register_grouping(m);
    bertforge::register_shards(m);
    bertforge::register_philox(m);
    bertforge::register_philox_rows(m);
    bertforge::register_blending(m);
}
