import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from fedtl_helpers.teaching import plotting  # noqa: E402


def test_partition_bars_stack_to_client_sizes():
    stats = np.array([[3, 1], [0, 5], [2, 2]])
    ax = plotting.partition_bars(stats, ["a", "b"], "t")
    tops = {}
    for bar in ax.patches:
        x = round(bar.get_x() + bar.get_width() / 2)
        tops[x] = max(tops.get(x, 0), bar.get_y() + bar.get_height())
    assert [tops[k] for k in range(3)] == [4, 5, 4]
    assert ax.get_xlabel() == "client" and ax.get_title() == "t"


def test_client_accuracy_marks_mean_and_worst():
    ax = plotting.client_accuracy({"global": np.array([0.2, 0.6]), "local": np.array([0.8, 1.0])}, "t")
    means = ax.collections[1].get_segments()  # the mean bars
    np.testing.assert_allclose([s[0][1] for s in means], [0.4, 0.9])
    worst = ax.collections[2].get_offsets()
    np.testing.assert_allclose(np.asarray(worst)[:, 1], [0.2, 0.8])
