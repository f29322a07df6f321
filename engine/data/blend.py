"""Weighted blends of prepared datasets (`--data 0.7:wiki_data 0.3:books_data`), after Megatron-LM's BlendedDataset
(megatron/core/datasets/blended_dataset.py) and its greedy `build_blending_indices`.

The training stream is a sequence of samples t = 0, 1, ... (global micro batch k holds t in [k B, (k + 1) B), rank
k % world serves it, as engine/data/sampler.py). Sample t comes from dataset d = dataset_index[t mod P], chosen by
the greedy rule of csrc/blending.cpp over a period of P = 2^20 samples, as that dataset's c-th sample, c =
dataset_sample_index[t mod P] + (t div P) x count_d(P); inside dataset d, c is epoch c div N_d of its own seeded
permutation (numpy default_rng([seed, epoch, 7, d])), position c mod N_d. Hence:
- shares are counted in samples (not tokens): over any window of W consecutive samples each dataset's count is
  within 2 samples of w_d x W (3 across a period boundary); the tests check every window of 1,000;
- a sample depends on (seed, weights, t) only, so resume is exact and the rank count may change (the sampler's
  position remap carries over unchanged: positions count global micro batches);
- each dataset has its own held-out split (by document hash, --eval-fraction), evaluated and reported per dataset.
Sample ids (mask seeds, dropout ids) are positions in the datasets' concatenation, unique over the blend."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertforge import _csrc
from bertforge.data.sampler import MicroBatchIndices
from bertforge.errors import ConfigError

PERIOD = 1 << 20  # samples of one blending table (int16 + int64: 10 MB)


@dataclass(frozen=True)
class BlendEntry:
    weight: float  # normalised: the entries' weights sum to 1
    path: str      # the prepared dataset's folder


def parse_blend(spec: str) -> list[BlendEntry]:
    """`--data` -> entries. A folder alone is a blend of one. 'W:DIR W:DIR ...' (spaces or commas between entries)
    or a .json / .yaml file holding a list of {path, weight} (relative paths are relative to the file). Weights are
    positive numbers, normalised to sum 1. ConfigError naming the entry otherwise."""
    spec = str(spec).strip()
    if spec.endswith((".json", ".yaml", ".yml")) and Path(spec).is_file():
        return _from_file(Path(spec))
    parts = [p for p in spec.replace(",", " ").split() if p]
    if len(parts) == 1 and not _weighted(parts[0]):
        return [BlendEntry(1.0, parts[0])]
    pairs = []
    for part in parts:
        if not _weighted(part):
            raise ConfigError(f"--data: {part!r} has no weight; write each dataset of a blend as WEIGHT:DIR "
                              f"(e.g. --data 0.7:wiki_data 0.3:books_data)")
        w, path = part.split(":", 1)
        pairs.append((_weight(w, f"--data {part!r}"), path))
    return _normalised(pairs, "--data")


def _weighted(part: str) -> bool:
    head = part.split(":", 1)[0]
    try:
        float(head)
    except ValueError:
        return False
    return ":" in part


def _weight(text, where: str) -> float:
    try:
        w = float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: weight {text!r} is not a number") from None
    if not w > 0 or not np.isfinite(w):
        raise ConfigError(f"{where}: weight {text!r} must be a positive number")
    return w


def _from_file(path: Path) -> list[BlendEntry]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    else:
        import yaml

        try:
            items = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{path}: a blend file holds a non-empty list of {{path: DIR, weight: W}}")
    pairs = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "path" not in item or "weight" not in item:
            raise ConfigError(f"{path}: entry {i} must have 'path' and 'weight', got {item!r}")
        folder = Path(item["path"])
        pairs.append((_weight(item["weight"], f"{path}: entry {i}"),
                      str(folder if folder.is_absolute() else path.parent / folder)))
    return _normalised(pairs, str(path))


def _normalised(pairs: list[tuple[float, str]], where: str) -> list[BlendEntry]:
    paths = [p for _, p in pairs]
    if len(set(paths)) != len(paths):
        raise ConfigError(f"{where}: a dataset appears twice in the blend; give each once with its total weight")
    total = sum(w for w, _ in pairs)
    return [BlendEntry(w / total, p) for w, p in pairs]


# ---- the blending table ----------------------------------------------------------------------------------------
def blending_indices(weights, size: int) -> tuple[np.ndarray, np.ndarray]:
    """weights (n,) > 0 -> (dataset_index (size,) int16, dataset_sample_index (size,) int64), C++ (csrc/blending.cpp)."""
    return _csrc.build_blending_indices(np.asarray(weights, dtype=np.float64), int(size))


def blending_indices_ref(weights, size: int) -> tuple[np.ndarray, np.ndarray]:
    """numpy reference of `blending_indices` (same greedy rule, same float64 arithmetic)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) < 1 or not (w > 0).all():
        raise ValueError("blending_indices_ref: weights must be 1-D and positive")
    w = w / w.sum()
    count = np.zeros(len(w), dtype=np.int64)
    di, si = np.zeros(size, dtype=np.int16), np.zeros(size, dtype=np.int64)
    for i in range(size):
        d = int(np.argmax(w * float(max(i, 1)) - count))  # first maximum: ties to the lower index
        di[i], si[i] = d, count[d]
        count[d] += 1
    return di, si


class BlendSampler:
    """MicroBatchSampler's contract (`indices(position)`) over a blend of datasets with `sizes` (n,) samples each:
    rank `rank` of `world` takes global micro batches k = position x world + rank of the stream described in the
    module docstring; indices are positions in the datasets' concatenation (offsets = cumulative sizes)."""

    def __init__(self, sizes, weights, micro_batch: int, rank: int = 0, world: int = 1, seed: int = 0,
                 period: int = PERIOD):
        self.sizes = np.asarray(sizes, dtype=np.int64)
        if (self.sizes < 1).any() or micro_batch < 1 or not 0 <= rank < world:
            raise ValueError(f"blend sampler needs datasets of >= 1 sample, a positive micro batch and rank in "
                             f"[0, world): sizes {self.sizes.tolist()}, micro batch {micro_batch}, rank {rank} of "
                             f"{world}")
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        self.micro_batch, self.rank, self.world, self.seed = micro_batch, rank, world, seed
        self.dataset_index, self.dataset_sample_index = blending_indices(weights, period)
        self.period = period
        self.per_period = np.bincount(self.dataset_index, minlength=len(self.sizes)).astype(np.int64)  # (n,)
        self._orders: dict[tuple[int, int], np.ndarray] = {}

    @property
    def num_samples(self) -> int:
        return int(self.offsets[-1])

    def _order(self, d: int, epoch: int) -> np.ndarray:
        key = (d, epoch)
        if key not in self._orders:
            if len(self._orders) > 4 * len(self.sizes):
                self._orders.clear()
            self._orders[key] = np.random.default_rng([self.seed, epoch, 7, d]).permutation(int(self.sizes[d]))
        return self._orders[key]

    def samples(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stream positions t (n,) -> (dataset (n,), dataset epoch (n,), concatenated sample index (n,))."""
        t = np.asarray(t, dtype=np.int64)
        cycle, r = np.divmod(t, self.period)
        d = self.dataset_index[r].astype(np.int64)
        c = self.dataset_sample_index[r] + cycle * self.per_period[d]
        epoch, pos = np.divmod(c, self.sizes[d])
        idx = np.empty_like(t)
        for i in range(len(t)):
            idx[i] = self._order(int(d[i]), int(epoch[i]))[pos[i]]
        return d, epoch, idx + self.offsets[d]

    def indices(self, position: int) -> MicroBatchIndices:
        """This rank's micro batch number `position` (pure)."""
        k = position * self.world + self.rank
        _, epochs, idx = self.samples(k * self.micro_batch + np.arange(self.micro_batch))
        return MicroBatchIndices(int(epochs.min()), k, idx, epochs)

    def micro_batches_per_epoch(self) -> float:
        return self.num_samples / (self.micro_batch * self.world)


class BlendedDataset:
    """The datasets of a blend as one map-style dataset over their concatenation (index = offsets[d] + i):
    `__getitems__` gathers every dataset's rows and puts them back in the asked order (same RawBatch as the
    members: engine/data/pretraining.py). All members must share the tokenizer (checked by the caller); `weights`
    (n,) are the blend's, for the masker's replacement distribution."""

    def __init__(self, datasets: list, weights):
        self.datasets, self.weights = datasets, np.asarray(weights, dtype=np.float64)
        self.offsets = np.concatenate([[0], np.cumsum([len(ds) for ds in datasets])]).astype(np.int64)
        first = datasets[0]
        self.data, self.special, self.continuation, self.seed = first.data, first.special, first.continuation, first.seed

    def masker(self, mlm_probability: float = 0.15, random_replacement: str = "unigram"):
        """The members' 80/10/10 Masker with random replacements drawn from the blend's unigram distribution (each
        dataset's token frequencies, weighted by its blend weight) or uniformly."""
        from bertforge.data.masking import build_masker

        if random_replacement not in ("unigram", "uniform"):
            raise ValueError("random_replacement must be 'unigram' or 'uniform'")
        counts = None
        if random_replacement == "unigram":
            counts = sum(w * c / max(c.sum(), 1) for w, c in
                         zip(self.weights, (ds.data.unigram_counts().astype(np.float64) for ds in self.datasets)))
        return build_masker(self.special.mask_id, self.data.vocab_size, self.special.as_list(), counts,
                            mlm_probability, self.seed)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitems__(self, indices):
        from bertforge.data.pretraining import RawBatch

        idx = np.asarray(indices, dtype=np.int64)
        which = np.searchsorted(self.offsets, idx, side="right") - 1
        parts, rows = [], []
        for d in np.unique(which):
            sel = np.flatnonzero(which == d)
            parts.append(self.datasets[d].__getitems__(idx[sel] - self.offsets[d]))
            rows.append(sel)
        order = np.argsort(np.concatenate(rows), kind="stable")
        width = max(p.input_ids.shape[1] for p in parts)

        def cat(name, fill):
            arrays = [getattr(p, name) for p in parts]
            if arrays[0].ndim == 2:
                arrays = [np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=fill) for a in arrays]
            return np.concatenate(arrays)[order]

        return RawBatch(cat("input_ids", self.special.pad_id), cat("token_type_ids", 0), cat("lengths", 0),
                        cat("special_mask", True), cat("nsp_labels", -100), idx)
