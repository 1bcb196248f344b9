"""Splitting a training set across clients: IID, the article's strided split, and non-IID.

Chapter: "FL overview" (who holds which examples) and "Non-IID data" (label skew and what it
does to FedAvg). Everything here is pure numpy over label arrays and index arrays.

- ``"iid"``: a random permutation cut into near-equal parts.
- ``"strided"``: the article's case study, client ``i`` gets ``x[i::num_clients]``.
- ``"dirichlet"``: label skew; each class is spread over clients with proportions drawn from
  ``Dirichlet(alpha)`` (Hsu et al. 2019, as in Flower Datasets' ``DirichletPartitioner``).
  Small ``alpha`` (0.1) gives clients a few dominant classes; large (100) is close to IID.
- ``"shards"``: McMahan et al. 2017's pathological split; sort by label, cut into
  ``num_clients * shards_per_client`` shards, give each client ``shards_per_client`` of them.

Quantity skew (``quantity_alpha`` with ``"iid"``): the label mix is the same everywhere but the
client sizes are drawn from ``Dirichlet(quantity_alpha)`` (Li et al. 2022, "Federated learning on
non-IID data silos"): small values give a few large clients and many tiny ones.

Feature skew (``feature_skew``, chapter "Parameter-efficient federated fine-tuning", FedBN):
every client holds all classes, but sees its images through its own style, a colour tint, a
contrast change or a blur (Li et al. 2021, FedBN: the same digits from different datasets).
"""

from __future__ import annotations

import math

import numpy as np

SCHEMES = ("iid", "strided", "dirichlet", "shards")
_DIRICHLET_TRIES = 100  # resample this often before declaring the settings impossible
_MIN_CLIENT_SIZE = 1  # every client must hold at least this many examples


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(
            f"labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}"
            " (Keras-style (N, 1) labels: pass labels.ravel())"
        )
    return labels


def _check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> None:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum
    if not ok or (maximum is not None and value > maximum):
        allowed = f"an integer >= {minimum}" + ("" if maximum is None else f" and <= {maximum}")
        raise ValueError(f"{name}={value!r} is invalid: allowed {allowed}")


def _dirichlet(labels: np.ndarray, k: int, alpha: float, rng: np.random.Generator) -> list:
    for _ in range(_DIRICHLET_TRIES):
        parts: list[list[np.ndarray]] = [[] for _ in range(k)]
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(k, alpha)))[:-1] * len(idx)).astype(int)
            for client, chunk in enumerate(np.split(idx, cuts)):
                parts[client].append(chunk)
        parts = [np.concatenate(p) for p in parts]
        if min(len(p) for p in parts) >= _MIN_CLIENT_SIZE:
            return parts
    raise ValueError(
        f"scheme='dirichlet' with alpha={alpha}, num_clients={k} and {len(labels)} examples left "
        f"some client with fewer than {_MIN_CLIENT_SIZE} example(s) in all {_DIRICHLET_TRIES} "
        "draws: increase alpha, use fewer clients, or use more examples"
    )


def _shards(labels: np.ndarray, k: int, per_client: int, rng: np.random.Generator) -> list:
    num_shards = k * per_client
    if num_shards > len(labels):
        raise ValueError(
            f"shards_per_client={per_client} is invalid: num_clients * shards_per_client = "
            f"{num_shards} shards but only {len(labels)} examples; lower either"
        )
    # Shuffle first so a shard is a random sample of its class, not a run of the input order.
    order = rng.permutation(len(labels))
    order = order[np.argsort(labels[order], kind="stable")]
    shards = np.array_split(order, num_shards)
    owner = rng.permutation(num_shards).reshape(k, per_client)
    return [np.concatenate([shards[s] for s in row]) for row in owner]


def quantity_skew_sizes(n: int, num_clients: int, quantity_alpha: float,
                        rng: np.random.Generator) -> np.ndarray:
    """Client sizes summing to ``n``: ``_MIN_CLIENT_SIZE`` each, the rest split by ``Dirichlet``."""
    spare = n - num_clients * _MIN_CLIENT_SIZE
    if spare < 0:
        raise ValueError(f"num_clients={num_clients} is invalid: {n} examples cannot give every "
                         f"client {_MIN_CLIENT_SIZE} example(s)")
    shares = rng.dirichlet(np.full(num_clients, float(quantity_alpha)))
    return _MIN_CLIENT_SIZE + rng.multinomial(spare, shares)


def partition(
    labels: np.ndarray,
    num_clients: int,
    scheme: str = "iid",
    *,
    alpha: float | None = None,
    shards_per_client: int = 2,
    seed: int = 0,
    quantity_alpha: float | None = None,
) -> list[np.ndarray]:
    """Split example indices across ``num_clients`` clients.

    Parameters
    ----------
    labels
        1-D integer labels of the whole training set.
    num_clients
        Number of clients, 1 to ``len(labels)``.
    scheme
        One of :data:`SCHEMES` (see the module docstring).
    alpha
        Dirichlet concentration, required for ``scheme="dirichlet"`` and only allowed there.
    shards_per_client
        Shards per client for ``scheme="shards"``.
    seed
        Seed for ``np.random.default_rng``; ``"strided"`` is deterministic and ignores it.
    quantity_alpha
        Quantity skew, only with ``scheme="iid"``: client sizes from ``Dirichlet(quantity_alpha)``
        (every client keeps at least one example); ``None`` gives near-equal sizes.

    Returns
    -------
    list of np.ndarray
        One sorted ``int64`` index array per client; disjoint, covering every example, and
        none empty.

    Raises
    ------
    ValueError
        An invalid argument (the message names it), or a Dirichlet split that leaves a client
        empty in every one of 100 draws.
    """
    labels = _check_labels(labels)
    n = len(labels)
    _check_int("num_clients", num_clients, 1, n)
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r} is invalid: allowed {', '.join(map(repr, SCHEMES))}")
    if scheme == "dirichlet":
        if (
            alpha is None
            or isinstance(alpha, bool)
            or not isinstance(alpha, (int, float))
            or not math.isfinite(alpha)
            or alpha <= 0
        ):
            raise ValueError(f"alpha={alpha!r} is invalid: scheme='dirichlet' needs a number > 0")
    elif alpha is not None:
        raise ValueError(
            f"alpha={alpha!r} is invalid for scheme={scheme!r}: alpha is only used by "
            "scheme='dirichlet'; leave it None"
        )
    _check_int("shards_per_client", shards_per_client, 1)
    if quantity_alpha is not None:
        q = quantity_alpha
        if scheme != "iid":
            raise ValueError(f"quantity_alpha={q!r} is invalid for scheme={scheme!r}: quantity skew "
                             "is only applied to scheme='iid'; leave it None")
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not math.isfinite(q) or q <= 0:
            raise ValueError(f"quantity_alpha={q!r} is invalid: allowed a finite number > 0")

    rng = np.random.default_rng(seed)
    if scheme == "iid" and quantity_alpha is not None:
        sizes = quantity_skew_sizes(n, num_clients, quantity_alpha, rng)
        parts = np.split(rng.permutation(n), np.cumsum(sizes)[:-1])
    elif scheme == "iid":
        parts = np.array_split(rng.permutation(n), num_clients)
    elif scheme == "strided":
        parts = [np.arange(i, n, num_clients) for i in range(num_clients)]
    elif scheme == "dirichlet":
        parts = _dirichlet(labels, num_clients, float(alpha), rng)
    else:
        parts = _shards(labels, num_clients, shards_per_client, rng)
    return [np.sort(p).astype(np.int64) for p in parts]


def partition_stats(
    labels: np.ndarray, parts: list[np.ndarray], num_classes: int | None = None
) -> np.ndarray:
    """Label counts per client: ``stats[k, c]`` examples of class ``c`` on client ``k``.

    Parameters
    ----------
    labels
        1-D non-negative integer labels.
    parts
        Index arrays, as returned by :func:`partition`.
    num_classes
        Number of columns; default ``labels.max() + 1``.

    Returns
    -------
    np.ndarray
        ``int64`` array of shape ``(len(parts), num_classes)``.
    """
    labels = _check_labels(labels)
    if labels.size and labels.min() < 0:
        raise ValueError(f"labels must be >= 0 to be counted, got min {labels.min()}")
    top = int(labels.max()) + 1 if labels.size else 0
    if num_classes is None:
        num_classes = top
    _check_int("num_classes", num_classes, max(top, 1))
    return np.stack(
        [np.bincount(labels[np.asarray(p, dtype=np.int64)], minlength=num_classes) for p in parts]
    ).astype(np.int64)


def label_skew(stats: np.ndarray) -> float:
    """Mean total-variation distance between each client's label mix and the global one.

    0 when every client has exactly the global class proportions; at most 1 (disjoint
    classes). Clients without examples are skipped. Use it to compare partitions: the
    Dirichlet skew grows as ``alpha`` falls.

    Parameters
    ----------
    stats
        Counts from :func:`partition_stats`, shape ``(num_clients, num_classes)``.

    Returns
    -------
    float
    """
    stats = np.asarray(stats, dtype=np.float64)
    if stats.ndim != 2 or (stats < 0).any() or stats.sum() == 0:
        raise ValueError(
            f"stats must be a 2-D array of non-negative counts with a positive total, "
            f"got shape {stats.shape}"
        )
    sizes = stats.sum(axis=1)
    local = stats[sizes > 0] / sizes[sizes > 0, None]
    global_mix = stats.sum(axis=0) / stats.sum()
    return float(np.mean(0.5 * np.abs(local - global_mix).sum(axis=1)))


# ------------------------------------------------------------------ feature skew
STYLES = ("tint", "contrast", "blur")


def client_style(client: int, seed: int = 0) -> tuple[str, np.ndarray]:
    """Client ``client``'s image style: its kind (cycling through ``STYLES``) and parameters.

    ``"tint"``: a gain per colour channel in [0.4, 1.6]; ``"contrast"``: one factor in
    [0.3, 0.6] or [1.6, 2.5] (flatter or harsher); ``"blur"``: 1 to 3 passes of a 3x3 box blur.
    """
    _check_int("client", client, 0)
    rng = np.random.default_rng([seed, client, 31])
    kind = STYLES[client % len(STYLES)]
    if kind == "tint":
        return kind, rng.uniform(0.4, 1.6, size=3)
    if kind == "contrast":
        return kind, np.array([rng.uniform(0.3, 0.6) if rng.random() < 0.5 else rng.uniform(1.6, 2.5)])
    return kind, np.array([1 + client // len(STYLES) % 3])


def apply_style(x: np.ndarray, kind: str, param: np.ndarray) -> np.ndarray:
    """Images ``x`` (uint8, ``(N, H, W, 3)``) in style ``(kind, param)`` (see ``client_style``)."""
    if kind not in STYLES:
        raise ValueError(f"kind={kind!r} is invalid: allowed {', '.join(map(repr, STYLES))}")
    f = np.asarray(x, np.float32)
    if kind == "tint":
        f = f * np.asarray(param, np.float32).reshape(1, 1, 1, 3)
    elif kind == "contrast":
        mean = f.mean(axis=(1, 2, 3), keepdims=True)  # per image: the class cue stays
        f = mean + float(param[0]) * (f - mean)
    else:
        for _ in range(int(param[0])):
            p = np.pad(f, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
            h, w = f.shape[1:3]
            f = sum(p[:, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0
    return np.clip(np.rint(f), 0, 255).astype(np.uint8)


def feature_skew(x: np.ndarray, parts: list[np.ndarray], seed: int = 0) -> np.ndarray:
    """A copy of ``x`` in which client ``k``'s examples (``parts[k]``) wear ``client_style(k)``.

    Pair it with any label split (``"iid"`` gives pure feature skew: same classes, different
    looks). ``x`` must be uint8 images ``(N, H, W, 3)``.
    """
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
        raise ValueError(f"x must be uint8 images of shape (N, H, W, 3), got shape {x.shape} "
                         f"dtype {x.dtype}")
    out = x.copy()
    for k, idx in enumerate(parts):
        out[idx] = apply_style(x[idx], *client_style(k, seed))
    return out
