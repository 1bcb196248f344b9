import numpy as np
import pytest

from fedtl_helpers.transforms.aggregation import fedavg, mean


def test_fedavg_hand_checkable():
    out = fedavg([[np.array([1.0, 2.0])], [np.array([3.0, 4.0])]], [1, 3])
    np.testing.assert_allclose(out[0], [2.5, 3.5])


def test_fedavg_several_tensors_and_dtype_kept():
    a = [np.ones((2, 2), np.float32), np.zeros(3, np.float32)]
    b = [3 * np.ones((2, 2), np.float32), np.full(3, 4.0, np.float32)]
    out = fedavg([a, b], [2, 2])
    np.testing.assert_allclose(out[0], np.full((2, 2), 2.0))
    np.testing.assert_allclose(out[1], np.full(3, 2.0))
    assert out[0].dtype == np.float32


def test_fedavg_does_not_modify_inputs():
    a, b = [np.array([1.0])], [np.array([5.0])]
    fedavg([a, b], [1, 1])
    assert a[0][0] == 1.0 and b[0][0] == 5.0


def test_unweighted_mean_differs_from_weighted():
    ws = [[np.array([0.0])], [np.array([10.0])]]
    assert mean(ws)[0][0] == 5.0
    assert fedavg(ws, [9, 1])[0][0] == pytest.approx(1.0)


def test_fedavg_single_client_is_identity():
    w = [np.array([1.5, -2.0])]
    np.testing.assert_array_equal(fedavg([w], [7])[0], w[0])


@pytest.mark.parametrize(
    "weights, counts, match",
    [
        ([], [], "empty"),
        ([[np.zeros(2)], [np.zeros(3)]], [1, 1], "shape"),
        ([[np.zeros(2)], [np.zeros(2), np.zeros(1)]], [1, 1], "tensors"),
        ([[np.zeros(2)], [np.zeros(2)]], [1, 0], "positive"),
        ([[np.zeros(2)], [np.zeros(2)]], [1, -2], "positive"),
        ([[np.zeros(2)], [np.zeros(2)]], [1], "entries"),
    ],
)
def test_fedavg_rejects_bad_input(weights, counts, match):
    with pytest.raises(ValueError, match=match):
        fedavg(weights, counts)
