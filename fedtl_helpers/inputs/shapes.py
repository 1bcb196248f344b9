"""The embedded offline dataset: procedurally generated shape images.

Chapter: Introduction / the embedded dataset.

Every image is 32x32 RGB and holds exactly one shape; the shape is the class. The
shape is rotated by any angle, placed, scaled and slightly stretched at random, and
drawn over a two-colour gradient background cluttered with lines and blobs. Its colour
is random (with a minimum contrast to the background), sometimes striped, shaded by a
light gradient, and the whole image gets pixel noise.

Why this is a fair offline stand-in for CIFAR-10: same tensor format (32x32x3 uint8,
10 classes, 10k/2k-sized splits), classes that are not encoded by colour or by any
single pixel (a linear model on raw pixels stays near chance), near-confusable pairs
(circle/ellipse, square/rectangle, pentagon/hexagon, triangle/arrow) so a small CNN
trained for a few epochs lands well below 100%, and a *different* source task
(`SOURCE_SHAPES`, 20 other shapes from the same generator) to pretrain a backbone on,
so "pretrained vs random initialisation" is a genuine transfer experiment.

Difficulty was tuned by measurement (``load_shapes()`` defaults, seed 0, 2 CPU cores,
Adam 1e-3, batch 64): softmax regression on raw pixels 11% after 5 epochs (chance is
10%); a ~140k-parameter CNN (two BatchNorm conv stages, GAP) 66% after 5 epochs (56-66%
over three initialisation seeds) and 87% after 10; with 1,000 target images and 3
epochs, a frozen backbone pretrained 5 epochs on 20k source images reaches 42% against
10% for the same CNN from random initialisation. 12,000 images take ~2.3 s on one core.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

TARGET_SHAPES: tuple[str, ...] = (
    "circle", "ellipse", "square", "rectangle", "triangle",
    "arrow", "pentagon", "hexagon", "star", "cross",
)  # fmt: skip
SOURCE_SHAPES: tuple[str, ...] = (
    "ring", "semicircle", "crescent", "heart", "rhombus",
    "trapezoid", "parallelogram", "octagon", "star4", "star6",
    "l_shape", "t_shape", "u_shape", "chevron", "bowtie",
    "kite", "teardrop", "right_triangle", "frame", "pacman",
)  # fmt: skip
_TASKS: dict[str, tuple[str, ...]] = {"target": TARGET_SHAPES, "source": SOURCE_SHAPES}
# Mixed into the seed so that the two tasks never share a random stream.
_TASK_KEY = {"target": 0, "source": 1}

SIZE = 32
_CHUNK = 1024  # images rendered per vectorised batch; keeps arrays cache-sized

# Difficulty knobs, tuned by measurement (numbers in the module docstring). Image
# coordinates run from -1 to 1, so one pixel is 0.0625 wide.
_SCALE = (0.55, 0.85)  # shape radius as a fraction of the half-image
_CONTRAST = 0.7  # minimum RGB distance of the shape colour from every background colour
_CLUTTER_P = 0.25  # probability that each of the clutter items is drawn
_N_LINES, _N_BLOBS = 2, 2
_LINE_W = (0.015, 0.05)  # clutter line half-width
_BLOB_R = (0.06, 0.2)  # clutter blob semi-axes
_CLUTTER_A = (0.3, 0.8)  # clutter opacity
_STRIPE_P = 0.15  # fraction of shapes with a striped fill
_GRADIENT = (0.2, 0.6)  # background gradient steepness (per half-image)
_SHADE = 0.2  # maximum strength of the directional shading
_NOISE = (0.0, 0.025)  # range of the per-image pixel-noise standard deviation

# Shapes are signed distance functions (negative inside) in shape coordinates where
# every shape roughly fills the unit disc. Pixel coverage comes from the distance
# itself (a one-pixel linear ramp): anti-aliasing as smooth as 4x supersampling at a
# quarter of the cost, which keeps 12k images at a couple of seconds.
SDF = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _poly(*verts: tuple[float, float]) -> SDF:
    """Convex polygon: the max of its outward edge distances.

    That is exact inside and along the edges, which is all the one-pixel ramp needs.
    """
    p = np.asarray(verts, dtype=np.float64)
    if np.sum(p[:, 0] * np.roll(p[:, 1], -1) - np.roll(p[:, 0], -1) * p[:, 1]) < 0:
        p = p[::-1]  # counter-clockwise, so the normals below point outwards
    e = np.roll(p, -1, axis=0) - p
    n = np.stack([e[:, 1], -e[:, 0]], axis=1) / np.hypot(e[:, 0], e[:, 1])[:, None]
    hp = np.column_stack([n, np.sum(n * p, axis=1)]).astype(np.float32)

    def sdf(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        d = hp[0, 0] * u + hp[0, 1] * v - hp[0, 2]
        for nx, ny, h in hp[1:]:
            np.maximum(d, nx * u + ny * v - h, out=d)
        return d

    return sdf


def _ngon(k: int, r: float = 1.0, rot: float = 0.0) -> SDF:
    a = 2 * np.pi * np.arange(k) / k + np.pi / 2 + rot
    return _poly(*zip(r * np.cos(a), r * np.sin(a)))


def _box(hx: float, hy: float, cx: float = 0.0, cy: float = 0.0) -> SDF:
    return lambda u, v: np.maximum(np.abs(u - cx) - hx, np.abs(v - cy) - hy)


def _disc(r: float, cx: float = 0.0, cy: float = 0.0) -> SDF:
    return lambda u, v: np.sqrt((u - cx) ** 2 + (v - cy) ** 2) - r


def _union(*parts: SDF) -> SDF:
    def sdf(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        d = parts[0](u, v)
        for f in parts[1:]:
            np.minimum(d, f(u, v), out=d)
        return d

    return sdf


def _minus(a: SDF, b: SDF) -> SDF:
    return lambda u, v: np.maximum(a(u, v), -b(u, v))


def _star(k: int, inner: float) -> SDF:
    # A star is the union of k convex kites (centre, inner, tip, inner).
    t, h = 2 * np.pi * np.arange(k) / k + np.pi / 2, np.pi / k
    rim = [((inner * np.cos(a - h), inner * np.sin(a - h)), (np.cos(a), np.sin(a)),
            (inner * np.cos(a + h), inner * np.sin(a + h))) for a in t]  # fmt: skip
    return _union(*(_poly((0.0, 0.0), *pts) for pts in rim))


_SDFS: dict[str, SDF] = {
    # target task
    "circle": _disc(0.95),
    "ellipse": lambda u, v: (np.sqrt(u * u + (v / 0.55) ** 2) - 1.0) * 0.55,
    "square": _box(0.72, 0.72),
    "rectangle": _box(0.95, 0.5),
    "triangle": _ngon(3),
    "arrow": _union(_box(0.55, 0.2, cx=-0.35), _poly((0.05, -0.6), (1.0, 0.0), (0.05, 0.6))),
    "pentagon": _ngon(5, 0.95),
    "hexagon": _ngon(6, 0.95),
    "star": _star(5, 0.45),
    "cross": _union(_box(0.92, 0.28), _box(0.28, 0.92)),
    # source task (pretraining only)
    "ring": lambda u, v: np.abs(np.sqrt(u * u + v * v) - 0.7) - 0.22,
    "semicircle": lambda u, v: np.maximum(np.sqrt(u * u + (v + 0.4) ** 2) - 1.0, -v - 0.4),
    "crescent": _minus(_disc(0.95), _disc(0.75, cx=0.45)),
    "heart": _union(
        _disc(0.45, -0.4, 0.3), _disc(0.45, 0.4, 0.3), _poly((-0.8, 0.15), (0.8, 0.15), (0, -0.95))
    ),
    "rhombus": _poly((-1.0, 0.0), (0.0, -0.55), (1.0, 0.0), (0.0, 0.55)),
    "trapezoid": _poly((-0.95, -0.55), (0.95, -0.55), (0.45, 0.55), (-0.45, 0.55)),
    "parallelogram": _poly((-0.95, -0.5), (0.4, -0.5), (0.95, 0.5), (-0.4, 0.5)),
    "octagon": _ngon(8, 0.95, rot=np.pi / 8),
    "star4": _star(4, 0.38),
    "star6": _star(6, 0.5),
    "l_shape": _union(_box(0.3, 0.9, cx=-0.5), _box(0.8, 0.3, cy=-0.6)),
    "t_shape": _union(_box(0.9, 0.28, cy=0.62), _box(0.28, 0.9)),
    "u_shape": _union(_box(0.25, 0.85, cx=-0.6), _box(0.25, 0.85, cx=0.6), _box(0.85, 0.25, cy=-0.6)),
    "chevron": _union(
        _poly((-0.7, 0.9), (-0.2, 0.9), (0.75, 0), (0.25, 0)),
        _poly((-0.7, -0.9), (-0.2, -0.9), (0.75, 0), (0.25, 0)),
    ),
    "bowtie": _union(
        _poly((-0.95, -0.75), (-0.95, 0.75), (0.1, 0)), _poly((0.95, -0.75), (0.95, 0.75), (-0.1, 0))
    ),
    "kite": _poly((0.0, 1.0), (0.6, 0.35), (0.0, -1.0), (-0.6, 0.35)),
    "teardrop": _union(_disc(0.6, cy=-0.35), _poly((-0.52, -0.05), (0.52, -0.05), (0.0, 1.0))),
    "right_triangle": _poly((-0.65, -0.6), (0.95, -0.6), (-0.65, 0.95)),
    "frame": _minus(_box(0.8, 0.8), _box(0.45, 0.45)),
    "pacman": _minus(_disc(0.95), _poly((0, 0), (1.5, -1.0), (1.5, 1.0))),
}

# Pixel-centre coordinates in [-1, 1], y pointing up; one pixel is 2 / SIZE wide.
_AX = ((np.arange(SIZE) + 0.5) * (2.0 / SIZE) - 1.0).astype(np.float32)
_X, _Y = _AX[None, None, :], -_AX[None, :, None]
_PX = SIZE / 2.0  # distance (image units) -> pixels


def _cover(d_pixels: np.ndarray) -> np.ndarray:  # pixel coverage from a signed distance
    return np.clip(0.5 - d_pixels, 0.0, 1.0)


def _seg_dist(p: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Distance from colours p (b, 1, 3) to colour segments seg (b, m, 2, 3) -> (b, m)."""
    a, d = seg[:, :, 0], seg[:, :, 1] - seg[:, :, 0]
    h = np.clip(np.sum((p - a) * d, -1, keepdims=True) / (np.sum(d * d, -1, keepdims=True) + 1e-9), 0, 1)
    return np.linalg.norm(p - a - h * d, axis=-1)


def _contrasting(rng: np.random.Generator, segs: np.ndarray, floor: float) -> np.ndarray:
    """Random RGB colours at least ``floor`` away from every colour segment in ``segs``.

    A two-colour gradient shows every colour *between* its ends, so the contrast is
    measured against the whole segment; otherwise a shape could vanish mid-gradient.
    """
    col = rng.random((segs.shape[0], 3), dtype=np.float32)
    for _ in range(30):  # rejection sampling; most succeed within a few rounds
        bad = (_seg_dist(col[:, None], segs) < floor).any(axis=1)
        if not bad.any():
            return col
        col[bad] = rng.random((int(bad.sum()), 3), dtype=np.float32)
    # Leftovers (~8% at floor 0.7: backgrounds spanning the cube) get the farthest corner.
    corners = np.array([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], np.float32)
    far = [_seg_dist(np.broadcast_to(c, (int(bad.sum()), 1, 3)), segs[bad]).min(1) for c in corners]
    col[bad] = corners[np.argmax(far, axis=0)]
    return col


def _render(rng: np.random.Generator, sdf: SDF, b: int) -> np.ndarray:
    """Render ``b`` images of one shape as float32 (b, SIZE, SIZE, 3), roughly in [0, 1]."""

    def u01(lo: float, hi: float, *shape: int) -> np.ndarray:
        return rng.uniform(lo, hi, (b, *shape)).astype(np.float32)

    def col(x: np.ndarray) -> np.ndarray:  # per-image colour -> broadcastable
        return x[:, None, None, :]

    # Two-colour smooth background along a random direction.
    bg = u01(0.0, 1.0, 2, 3)
    phi, k = u01(0, 2 * np.pi, 1, 1), u01(*_GRADIENT, 1, 1)
    t = np.clip(0.5 + k * (_X * np.cos(phi) + _Y * np.sin(phi)), 0.0, 1.0)
    img = col(bg[:, 0]) + (col(bg[:, 1]) - col(bg[:, 0])) * t[..., None]

    def paint(cover: np.ndarray) -> None:  # one clutter item in a random colour
        a = cover * (rng.random((b, 1, 1)) < _CLUTTER_P) * u01(*_CLUTTER_A, 1, 1)
        img[:] += (col(rng.random((b, 3), dtype=np.float32)) - img) * a[..., None]

    # Clutter behind the shape: line segments and small elliptic blobs, each present
    # with probability _CLUTTER_P, so the net cannot just look for "any edge".
    for _ in range(_N_LINES):
        p, q = u01(-1.1, 1.1, 2, 1, 1), u01(-1.1, 1.1, 2, 1, 1)
        ex, ey = q[:, 0] - p[:, 0], q[:, 1] - p[:, 1]
        wx, wy = _X - p[:, 0], _Y - p[:, 1]
        h = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey + 1e-6), 0.0, 1.0)
        dist = np.sqrt((wx - h * ex) ** 2 + (wy - h * ey) ** 2) - u01(*_LINE_W, 1, 1)
        paint(_cover(dist * _PX))
    for _ in range(_N_BLOBS):
        c, r = u01(-1.0, 1.0, 2, 1, 1), u01(*_BLOB_R, 2, 1, 1)
        dist = np.sqrt(((_X - c[:, 0]) / r[:, 0]) ** 2 + ((_Y - c[:, 1]) / r[:, 1]) ** 2) - 1
        paint(_cover(dist * r.min(axis=1) * _PX))

    # The shape: inverse of (stretch, rotate, scale, translate) maps pixels to shape
    # coordinates. Stretch stays within +-15% so a square never becomes a rectangle.
    s, th = u01(*_SCALE, 1, 1), u01(0, 2 * np.pi, 1, 1)
    stretch = np.exp(u01(-0.14, 0.14, 1, 1))
    c = u01(-1.0, 1.0, 2, 1, 1) * (1.0 - 0.85 * s[:, None])
    dx, dy = _X - c[:, 0], _Y - c[:, 1]
    u = (dx * np.cos(th) + dy * np.sin(th)) / (s * stretch)
    v = (dy * np.cos(th) - dx * np.sin(th)) * stretch / s
    alpha = _cover(sdf(u, v) * s * _PX)

    fill = _contrasting(rng, bg[:, None], _CONTRAST)
    # Striped fill on some shapes, in a second colour that stands out from both the
    # first and the background, so stripes never erase the outline.
    fill_seg = np.repeat(fill[:, None, None], 2, axis=2)
    stripe_col = col(_contrasting(rng, np.concatenate([bg[:, None], fill_seg], 1), _CONTRAST))
    fill = col(fill)
    freq, psi = u01(8.0, 14.0, 1, 1), u01(0, 2 * np.pi, 1, 1)
    on = (rng.random((b, 1, 1)) < _STRIPE_P).astype(np.float32)
    wave = np.clip(3.0 * np.sin(freq * (u * np.cos(psi) + v * np.sin(psi))), -1.0, 1.0)
    fill = fill + (stripe_col - fill) * (on * (0.5 + 0.5 * wave))[..., None]
    # Directional shading across the shape, as if lit from one side.
    lit, beta = u01(0.0, _SHADE, 1, 1), u01(0, 2 * np.pi, 1, 1)
    fill = fill * (1.0 + lit * (u * np.cos(beta) + v * np.sin(beta)))[..., None]
    img += (np.clip(fill, 0.0, 1.0) - img) * alpha[..., None]

    noise = rng.standard_normal(img.shape, dtype=np.float32) * u01(*_NOISE, 1, 1, 1)
    return img + noise


def _stream(task: str, seed: int, **counts: int) -> np.random.SeedSequence:
    """Validate every argument before any work, then derive the task's seed sequence."""
    if task not in _TASKS:
        raise ValueError(f"task must be one of {tuple(_TASKS)}, got task={task!r}")
    for name, value in {**counts, "seed": seed}.items():
        low = 0 if name == "seed" else 1
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {name}={value!r}")
    return np.random.SeedSequence([int(seed), _TASK_KEY[task]])


def _generate(n: int, task: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    names = _TASKS[task]
    k = len(names)
    # Balanced: n // k per class, the first n % k classes get one more; then shuffled.
    y = rng.permutation(np.arange(n) % k).astype(np.int64)
    x = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    for label, name in enumerate(names):
        idx = np.flatnonzero(y == label)
        for start in range(0, idx.size, _CHUNK):
            part = idx[start : start + _CHUNK]
            img = _render(rng, _SDFS[name], part.size)
            x[part] = np.clip(img * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8)
    return x, y


def load_shapes(
    n_train: int = 10_000, n_test: int = 2_000, *, seed: int = 0, task: str = "target"
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Train and test splits of the shapes dataset, shaped like ``cifar10.load_data()``.

    Parameters
    ----------
    n_train, n_test : int
        Split sizes, each at least 1.
    seed : int
        Non-negative seed. Train and test come from two independent child streams of
        it (``SeedSequence.spawn``), so no image appears in both splits.
    task : {"target", "source"}
        ``"target"``: the book's 10 classes (`TARGET_SHAPES`). ``"source"``: 20 other
        shapes (`SOURCE_SHAPES`) used only to pretrain a backbone. Classes are balanced:
        ``n // k`` each, the remainder spread one per class over the first classes.

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        uint8 images (n, 32, 32, 3) and int64 labels (n,).

    Raises
    ------
    ValueError
        If ``task`` is unknown, a split size is below 1 or ``seed`` is negative.
    """
    train_ss, test_ss = _stream(task, seed, n_train=n_train, n_test=n_test).spawn(2)
    train = _generate(int(n_train), task, np.random.default_rng(train_ss))
    test = _generate(int(n_test), task, np.random.default_rng(test_ss))
    return train, test
