"""The batching core (edge_module.batching) the HTTP batcher and the MQTT / IoT Edge transports share."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge_module.batching import RowMismatchError, merge, rows, score_batch, signature, split
from edge_module.runtime import BadInputError, ScoringError


def feeds(n: int, value: float = 1.0) -> dict[str, np.ndarray]:
    return {"a": np.full((n, 3), value, np.float32), "b": np.arange(n, dtype=np.int64)}


def test_signature_names_dtypes_and_row_shapes() -> None:
    assert signature(feeds(1)) == signature(feeds(5)) == (("a", "<f4", (3,)), ("b", "<i8", ()))
    assert signature(feeds(2)) != signature({"a": np.zeros((2, 4), np.float32), "b": np.zeros(2, np.int64)})
    assert signature({"a": np.float32(1.0) * np.ones(())}) is None  # 0-d: nothing to concatenate along
    assert signature({"a": np.zeros((2, 3)), "b": np.zeros(3)}) is None  # inputs disagree on rows
    assert rows(feeds(4)) == 4 and rows({"a": np.zeros(())}) == 1 and rows({}) == 1


def test_merge_and_split_mappings_and_sequences() -> None:
    batch = [feeds(1, 1.0), feeds(2, 2.0), feeds(3, 3.0)]
    merged = merge(batch)
    assert merged["a"].shape == (6, 3) and merged["b"].tolist() == [0, 0, 1, 0, 1, 2]
    assert merge(batch[:1]) is batch[0]
    by_name = split({"y": merged["a"][:, 0]}, [1, 2, 3])
    assert [part["y"].tolist() for part in by_name] == [[1.0], [2.0, 2.0], [3.0, 3.0, 3.0]]
    as_list = split([merged["a"], merged["b"]], [1, 2, 3])
    assert [part[1].tolist() for part in as_list] == [[0], [0, 1], [0, 1, 2]]
    with pytest.raises(RowMismatchError, match=r"output 'total' has shape \(\), not 6 rows"):
        split({"total": np.float32(6)}, [1, 2, 3])
    with pytest.raises(RowMismatchError, match="output 0 has shape"):
        split([np.zeros((5, 1))], [1, 2, 3])


class Recorder:
    """A model: doubles ``a``; refuses rows holding -1; counts its calls and their rows."""

    def __init__(self, outputs: str = "dict"):
        self.calls: list[int] = []
        self.outputs = outputs

    def __call__(self, inputs: dict[str, np.ndarray]) -> Any:
        self.calls.append(len(inputs["a"]))
        if (inputs["a"] == -1).any():
            raise BadInputError("input 'a' holds -1")
        y = inputs["a"] * 2
        if self.outputs == "summary":  # not one row per input row
            return {"y": y, "total": y.sum()}
        return {"y": y} if self.outputs == "dict" else [y]


def test_one_call_for_the_batch_cut_back_per_request() -> None:
    model = Recorder()
    out = score_batch(model, [feeds(1, 1.0), feeds(2, 2.0)])
    assert model.calls == [3]
    assert [o["y"].tolist() for o in out] == [[[2.0] * 3], [[4.0] * 3] * 2]
    listed = score_batch(Recorder("list"), [feeds(1, 1.0), feeds(1, 3.0)])
    assert [o[0].tolist() for o in listed] == [[[2.0] * 3], [[6.0] * 3]]


def test_a_failing_row_falls_back_to_one_call_per_request() -> None:
    model = Recorder()
    out = score_batch(model, [feeds(1, 1.0), feeds(2, -1.0), feeds(1, 3.0)])
    assert model.calls == [4, 1, 2, 1]  # the merged call failed, then each alone
    assert out[0]["y"].tolist() == [[2.0] * 3] and out[2]["y"].tolist() == [[6.0] * 3]
    assert isinstance(out[1], BadInputError) and "-1" in str(out[1])


def test_outputs_without_one_row_per_input_row_fall_back() -> None:
    model = Recorder("summary")
    out = score_batch(model, [feeds(1, 1.0), feeds(2, 2.0)])
    assert model.calls == [3, 1, 2]
    assert [float(o["total"]) for o in out] == [6.0, 24.0]


def test_a_single_request_is_one_call_and_its_error_is_its_outcome() -> None:
    model = Recorder()
    (out,) = score_batch(model, [feeds(2, -1.0)])
    assert model.calls == [2] and isinstance(out, BadInputError)


def test_a_cancelled_or_timed_out_batch_is_not_run_again() -> None:
    calls = []

    def cancelled(inputs: dict[str, np.ndarray]) -> Any:
        calls.append(1)
        raise ScoringError("the run was cancelled", 504)

    out = score_batch(cancelled, [feeds(1), feeds(1), feeds(1)])
    assert len(calls) == 1 and all(isinstance(o, ScoringError) and o.status == 504 for o in out)
