"""A NaN or infinite update is refused at once and never hangs the server (issue 31, point 3).

Before: ``clip_update`` scaled a NaN update by ``clip / nan`` and looped forever waiting for its
norm to drop below ``clip``; one node sending NaN stalled a DP run. Now clipping and DP's noisy
mean refuse it with a ``ValueError``, and the round drops it before aggregation, naming the
client in the row's ``dropped``; a round in which every update is non-finite stops the run with
``NonFiniteError`` (a diverged run), as it did without DP.
"""

import concurrent.futures
import math
import os

import numpy as np
import pytest

from fedtl_helpers.core.config import ExperimentConfig
from fedtl_helpers.core.storage import NonFiniteError
from fedtl_helpers.federation.round import ClientMessage, finite_updates
from fedtl_helpers.federation.server import run_federated
from fedtl_helpers.transforms import privacy, robust


def _within(seconds, fn, *args):
    """``fn(*args)``'s exception, or a failure if it has not returned after ``seconds`` (the old
    code never returned: the test must fail, not hang)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(fn, *args)
        try:
            future.result(timeout=seconds)
        except concurrent.futures.TimeoutError:
            print(f"{fn.__name__} hung on a non-finite update", flush=True)
            os._exit(1)  # a looping thread cannot be stopped: end the test process
        except ValueError as e:
            return e
    pytest.fail(f"{fn.__name__} accepted a non-finite update")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_clipping_and_the_noisy_mean_refuse_a_non_finite_update(bad):
    update = [np.ones((3, 2), np.float32), np.array([1.0, bad], np.float32)]
    error = _within(10, privacy.clip_update, update, 0.5)
    assert "update is invalid: it holds NaN or infinite values" in str(error)
    like = [np.zeros((3, 2), np.float32), np.zeros(2, np.float32)]
    error = _within(10, privacy.noisy_mean, [like, update], like, 0.5, 1.0, 2.0, np.random.default_rng(0))
    assert "update is invalid" in str(error)
    # a finite update still clips exactly
    clipped = privacy.clip_update([np.full(4, 3.0, np.float32)], 0.5)
    assert privacy.global_norm(clipped) == pytest.approx(0.5, rel=1e-6)


def test_the_round_drops_non_finite_updates_and_names_their_clients():
    def message(k):
        return ClientMessage(k, None, 10 * (k + 1), 0.1)

    good, nan = [np.ones(2, np.float32)], [np.array([1.0, np.nan], np.float32)]
    inf = [np.array([np.inf, 0.0], np.float32)]
    deltas, kept, dropped = finite_updates([good, nan, good, inf], [message(k) for k in range(4)], 3)
    assert dropped == [1, 3] and [m.client for m in kept] == [0, 2] and len(deltas) == 2
    assert finite_updates([good], [message(0)], 1)[2] == []
    with pytest.raises(NonFiniteError, match=r"round 3: every client's update \(2\) was NaN") as e:
        finite_updates([nan, inf], [message(0), message(1)], 3)
    assert e.value.round == 3


def test_the_nan_attack_sends_nan_of_the_same_shapes():
    delta = [np.ones((2, 3), np.float32), np.zeros(4, np.float32)]
    out = robust.poison(delta, "nan", 10.0)
    assert [t.shape for t in out] == [(2, 3), (4,)] and all(np.isnan(t).all() for t in out)
    assert all(t.dtype == np.float32 for t in out)


def _cfg(**kw):
    base = dict(num_clients=4, n_train=800, n_test=300, rounds=2, strategy="head", aggregator="mean",
                client_sampling="fixed", client_fraction=1.0, attack="nan", malicious_fraction=0.25)
    return ExperimentConfig(**(base | kw))


@pytest.mark.parametrize("dp", [False, True], ids=["fedavg", "dp"])
def test_a_client_sending_nan_is_dropped_and_the_run_goes_on(small_shapes, dp):
    """One of 4 clients sends NaN every round: each round drops it and averages the other 3."""
    extra = dict(dp_clip=0.5, dp_noise_multiplier=0.5) if dp else {}
    result = run_federated(_cfg(**extra), dataset=small_shapes, progress=False)
    (bad,) = robust.malicious_clients(4, 0.25, 0)
    rows = result.history.rows[1:]
    assert len(rows) == 2 and all(np.all(np.isfinite(w)) for w in result.weights)
    assert all(math.isfinite(r["test_loss"]) for r in rows)
    if dp:  # who was dropped is client-derived: withheld like the sampled ids
        assert all(r["dropped"] is None for r in rows)
    else:
        assert [r["dropped"] for r in rows] == [[bad], [bad]]
        assert [r["clients"] for r in rows] == [[0, 1, 2, 3]] * 2  # sampled, then dropped
        assert f"round 1: dropped the non-finite update of client(s) {bad}" in result.history.table()


def test_a_dp_run_whose_every_update_diverges_stops_instead_of_hanging(small_shapes):
    """The issue's case: ``learning_rate=1e30`` with DP ran past 40 s; it now stops in round 1."""
    cfg = _cfg(attack="none", malicious_fraction=0.0, rounds=3, learning_rate=1e30, dp_clip=0.5,
               dp_noise_multiplier=0.5, strategy="full")
    with pytest.raises(NonFiniteError, match="training diverged in round 1") as e:
        run_federated(cfg, dataset=small_shapes, progress=False)
    assert e.value.round == 1

