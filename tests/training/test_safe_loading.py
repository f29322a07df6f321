"""Safe loading of our trainer state and consolidated weights (bertforge.hf.load_state_file, weights_only=True).
Variants covered: a real trainer state (python / numpy / torch RNG states, scheduler dict, numpy scalars) loads and
round-trips; a pickle whose __reduce__ calls a function (os.system-like) is refused naming the file and nothing runs;
a pickled class instance outside the allow-list is refused; a truncated file is one line naming it."""
import numpy as np
import pytest
import torch

from bertforge.errors import CheckpointError
from bertforge.hf import load_state_file
from bertforge.train.rng import rng_state

RAN = []


def _payload(path):
    RAN.append(path)  # stands in for os.system: must never be called by loading
    return 0


class Evil:
    def __reduce__(self):
        return (_payload, ("pwned",))


class Plain:
    pass


def test_trainer_state_round_trips(tmp_path):
    state = {"step": 7, "scheduler": {"last_epoch": 7, "base_lrs": [1e-3]}, "rng": rng_state(),
             "data": {"epoch": 1, "position": np.int64(12)}, "skipped": 0}
    torch.save(state, tmp_path / "s.pt")
    got = load_state_file(tmp_path / "s.pt")
    assert got["step"] == 7 and got["rng"]["python"] == state["rng"]["python"]
    assert np.array_equal(got["rng"]["numpy"][1], state["rng"]["numpy"][1])
    assert torch.equal(got["rng"]["torch"], state["rng"]["torch"]) and got["data"]["position"] == 12


@pytest.mark.parametrize("obj", [Evil(), Plain()])
def test_code_in_a_pickle_is_refused(tmp_path, obj):
    torch.save({"step": 1, "x": obj}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil.pt: refused to unpickle it") as err:
        load_state_file(tmp_path / "evil.pt")
    assert RAN == [] and "\n" not in str(err.value)


def test_truncated_file_named(tmp_path):
    torch.save({"w": torch.zeros(1000)}, tmp_path / "t.pt")
    data = (tmp_path / "t.pt").read_bytes()
    (tmp_path / "t.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"t.pt: unreadable"):
        load_state_file(tmp_path / "t.pt")
