// Token files of a sharded dataset, memory-mapped with their file descriptors closed ("map and close"), and the
// loader's gather across them. A dataset of 10,000 shards maps 10,000 regions but holds no open file, so it opens
// under any `ulimit -n` (the mappings count against vm.max_map_count, 65,530 by default on Linux).
// Python facade and numpy reference (per-shard np.memmap and a Python loop): engine/data/shards.py.
//
// MappedShards(paths, n_tokens, itemsize)
//   paths    list of .bin files, in dataset order; file s holds n_tokens[s] token ids of `itemsize` bytes
//            (2 = uint16, 4 = int32), so global token t of shard s is at t - bases[s]
//   bases    (n_shards + 1,) int64 running token offsets: shard s owns global tokens [bases[s], bases[s + 1])
//   gather(positions)  any-shaped int64 global positions -> int64 token ids of the same shape. One pass over the
//            positions; the shard of a position is the previous position's when it still fits (runs of a sample's
//            tokens stay in one shard), else a binary search over `bases`: O(n + switches * log n_shards),
//            independent of how many shards the dataset has.
//   view(s)  shard s's tokens as a read-only numpy array over the mapping (no copy); it keeps the mapping alive.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include <pybind11/stl.h>

#include "helpers.h"

namespace bertforge {
namespace {

class MappedShards {
  public:
    MappedShards(const std::vector<std::string>& paths, const std::vector<int64_t>& n_tokens, int itemsize)
        : itemsize_(itemsize) {
        if (itemsize != 2 && itemsize != 4) throw std::invalid_argument("MappedShards: itemsize must be 2 or 4");
        if (paths.size() != n_tokens.size()) throw std::invalid_argument("MappedShards: paths/n_tokens differ");
        bases_.push_back(0);
        try {
            for (size_t s = 0; s < paths.size(); ++s) {
                map_one(paths[s], n_tokens[s]);
                bases_.push_back(bases_.back() + n_tokens[s]);
            }
        } catch (...) {
            unmap_all();
            throw;
        }
    }
    ~MappedShards() { unmap_all(); }
    MappedShards(const MappedShards&) = delete;
    MappedShards& operator=(const MappedShards&) = delete;

    int64_t n_shards() const { return static_cast<int64_t>(data_.size()); }
    int itemsize() const { return itemsize_; }

    py::array_t<int64_t> bases() const {
        py::array_t<int64_t> out(static_cast<py::ssize_t>(bases_.size()));
        std::copy(bases_.begin(), bases_.end(), out.mutable_data());
        return out;
    }

    py::array_t<int64_t> gather(py::array_t<int64_t, py::array::c_style | py::array::forcecast> positions) const {
        std::vector<py::ssize_t> shape(positions.shape(), positions.shape() + positions.ndim());
        py::array_t<int64_t> out(shape);
        const int64_t* pos = positions.data();
        int64_t* dst = out.mutable_data();
        const int64_t n = positions.size();
        int64_t bad = -1;
        {
            py::gil_scoped_release release;
            bad = itemsize_ == 2 ? gather_as<uint16_t>(pos, dst, n) : gather_as<int32_t>(pos, dst, n);
        }
        if (bad >= 0)
            throw py::index_error("MappedShards.gather: position " + std::to_string(pos[bad]) + " outside [0, " +
                                  std::to_string(bases_.back()) + ")");
        return out;
    }

    const char* data(int64_t s) const { return data_.at(static_cast<size_t>(s)); }
    int64_t size(int64_t s) const { return bases_.at(s + 1) - bases_.at(s); }

  private:
    int itemsize_;
    std::vector<const char*> data_;  // nullptr for an empty shard
    std::vector<size_t> bytes_;
    std::vector<int64_t> bases_;

    void map_one(const std::string& path, int64_t n) {
        const size_t want = static_cast<size_t>(n) * itemsize_;
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
        struct stat st {};
        if (::fstat(fd, &st) != 0) {
            const int err = errno;
            ::close(fd);
            throw std::runtime_error(path + ": cannot stat: " + std::strerror(err));
        }
        if (static_cast<size_t>(st.st_size) != want) {
            ::close(fd);
            throw std::runtime_error(path + ": token file is " + std::to_string(st.st_size) +
                                     " bytes but its index expects " + std::to_string(want) + " bytes (" +
                                     std::to_string(n) + " tokens x " + std::to_string(itemsize_) + " bytes): it is " +
                                     (static_cast<size_t>(st.st_size) < want ? "cut short" : "longer than its index") +
                                     "; prepare the dataset again");
        }
        void* p = nullptr;
        if (want > 0) {
            p = ::mmap(nullptr, want, PROT_READ, MAP_SHARED, fd, 0);
            if (p == MAP_FAILED) {
                const int err = errno;
                ::close(fd);
                throw std::runtime_error(path + ": cannot map: " + std::strerror(err));
            }
        }
        ::close(fd);  // the mapping stays valid without the descriptor (POSIX mmap)
        data_.push_back(static_cast<const char*>(p));
        bytes_.push_back(want);
    }

    void unmap_all() {
        for (size_t s = 0; s < data_.size(); ++s)
            if (data_[s] != nullptr) ::munmap(const_cast<char*>(data_[s]), bytes_[s]);
        data_.clear();
        bytes_.clear();
    }

    // Returns the index of the first out-of-range position, or -1.
    template <typename T>
    int64_t gather_as(const int64_t* pos, int64_t* dst, int64_t n) const {
        const int64_t total = bases_.back();
        int64_t cur = 0, lo = 0, hi = n_shards() > 0 ? bases_[1] : 0;
        for (int64_t i = 0; i < n; ++i) {
            const int64_t p = pos[i];
            if (p < lo || p >= hi) {
                if (p < 0 || p >= total) return i;
                cur = static_cast<int64_t>(std::upper_bound(bases_.begin(), bases_.end(), p) - bases_.begin()) - 1;
                lo = bases_[cur];
                hi = bases_[cur + 1];
            }
            dst[i] = static_cast<int64_t>(reinterpret_cast<const T*>(data_[cur])[p - lo]);
        }
        return -1;
    }
};

}  // namespace

void register_shards(py::module_& m) {
    py::class_<MappedShards>(m, "MappedShards",
                             "token files mapped with their descriptors closed; see csrc/shards.cpp")
        .def(py::init<const std::vector<std::string>&, const std::vector<int64_t>&, int>(), py::arg("paths"),
             py::arg("n_tokens"), py::arg("itemsize"))
        .def_property_readonly("n_shards", &MappedShards::n_shards)
        .def_property_readonly("itemsize", &MappedShards::itemsize)
        .def("bases", &MappedShards::bases, "(n_shards + 1,) int64 running token offsets")
        .def("gather", &MappedShards::gather, py::arg("positions"),
             "int64 global positions (any shape) -> int64 token ids of the same shape; IndexError when outside")
        .def(
            "view",
            [](py::object self, int64_t s) {
                const auto& m = self.cast<const MappedShards&>();
                if (s < 0 || s >= m.n_shards())
                    throw py::index_error("MappedShards.view: no shard " + std::to_string(s));
                const py::dtype dt = m.itemsize() == 2 ? py::dtype::of<uint16_t>() : py::dtype::of<int32_t>();
                static const char empty[8] = {0};
                const char* p = m.data(s) != nullptr ? m.data(s) : empty;
                py::array arr(dt, {m.size(s)}, {static_cast<py::ssize_t>(m.itemsize())}, p, self);
                py::detail::array_proxy(arr.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
                return arr;
            },
            py::arg("shard"), "shard s's tokens, read-only, over the mapping (no copy)");
}

}  // namespace bertforge
