"""Shrinking the trained global model for constrained clients: pruning and int8 TFLite.

Chapter: "Compute and storage". Two classic tools, measured on disk, in accuracy and in CPU
latency:

* **magnitude pruning** of the model's kernels to a target sparsity (the smallest weights by
  absolute value become zero), then a short fine-tune that keeps them at zero, so the model can
  recover what pruning took away. Zeros only save space once the file is compressed (or with a
  sparse runtime), so sizes are reported gzipped as well;
* **post-training int8 quantisation** with the TFLite converter: weights and activations in
  8-bit integers, calibrated on a few hundred representative images.

``tensorflow-model-optimization`` (the usual pruning/QAT toolkit) does not work with Keras 3;
pruning here is a mask and a training step, which is all it needs to be.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import time
import warnings
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

_LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _prunable(model: keras.Model) -> list[bool]:
    """Which of ``model.weights`` pruning touches: conv and dense kernels (not biases, not BN)."""
    return [w.path.endswith("kernel") and len(w.shape) >= 2 for w in model.weights]


def magnitude_masks(model: keras.Model, sparsity: float, scope: str = "global") -> list[np.ndarray | None]:
    """Keep-masks that zero the ``sparsity`` fraction of smallest-magnitude kernel weights.

    ``scope="global"`` ranks all kernels together (one threshold: big layers, which have most
    redundant weights, lose most; small ones such as the first convolution keep theirs), the
    usual choice; ``scope="layer"`` prunes every kernel to the same sparsity. Returns one mask per
    ``model.weights`` entry, ``None`` where nothing is pruned.

    Raises
    ------
    ValueError
        ``sparsity`` outside [0, 1), or an unknown ``scope``.
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise ValueError(f"sparsity={sparsity!r} is invalid: allowed a fraction in [0, 1).")
    if scope not in ("global", "layer"):
        raise ValueError(f"scope={scope!r} is invalid: allowed 'global' or 'layer'.")
    flags = _prunable(model)
    kernels = [np.abs(np.asarray(w.numpy())) if p else None for w, p in zip(model.weights, flags)]

    def keep(values: np.ndarray, pool: np.ndarray) -> np.ndarray:
        k = int(round(sparsity * pool.size))  # how many of the pool to zero
        if k == 0:
            return np.ones(values.shape, bool)
        threshold = np.partition(pool, k - 1)[k - 1]
        return values > threshold

    if scope == "layer":
        return [None if v is None else keep(v, v.ravel()) for v in kernels]
    pool = np.concatenate([v.ravel() for v in kernels if v is not None])
    return [None if v is None else keep(v, pool) for v in kernels]


def apply_masks(model: keras.Model, masks: list[np.ndarray | None]) -> None:
    """Zero the pruned weights in place."""
    for w, m in zip(model.weights, masks):
        if m is not None:
            w.assign(w.numpy() * m)


def sparsity_of(model: keras.Model) -> float:
    """Fraction of exactly-zero values among the prunable kernels."""
    kernels = [np.asarray(w.numpy()) for w, p in zip(model.weights, _prunable(model)) if p]
    return float(sum((k == 0).sum() for k in kernels) / sum(k.size for k in kernels))


def fine_tune_pruned(model: keras.Model, masks: list[np.ndarray | None], x: np.ndarray, y: np.ndarray,
                     *, epochs: int = 1, learning_rate: float = 1e-4, batch_size: int = 32,
                     seed: int = 0) -> float:
    """Train ``model`` (all trainable weights) while keeping pruned weights at zero.

    After every optimizer step the masks are re-applied, so the sparsity pattern is exactly the
    one ``magnitude_masks`` chose. Returns the mean loss of the last epoch.
    """
    opt = keras.optimizers.Adam(learning_rate)
    variables = model.trainable_variables
    masked = [(w, tf.constant(m, w.dtype)) for w, m in zip(model.weights, masks) if m is not None]

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = _LOSS(yb, model(tf.cast(xb, tf.float32), training=True))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        for w, m in masked:
            w.assign(w * m)
        return loss

    rng = np.random.default_rng(seed)
    losses: list[float] = []
    for _ in range(epochs):
        order = rng.permutation(len(x))
        losses = [float(step(x[order[s:s + batch_size]], y[order[s:s + batch_size]].astype(np.int64)))
                  for s in range(0, len(x), batch_size)]
    return float(np.mean(losses))


def to_tflite(model: keras.Model, representative: np.ndarray | None = None) -> bytes:
    """The model as a TFLite flatbuffer: float32, or full int8 when ``representative`` images are given.

    With ``representative`` (a few hundred training images), weights and activations are
    quantised to int8 (post-training, calibrated on those images); inputs and outputs stay
    float32 so the model is a drop-in replacement.
    """
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if representative is not None:
        def samples():
            for img in representative:
                yield [np.asarray(img[None], np.float32)]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = samples
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    # The converter exports a SavedModel first and prints and logs about it; keep notebooks readable.
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            return converter.convert()
    finally:
        logger.setLevel(level)


class TFLiteModel:
    """Runs a TFLite flatbuffer on CPU, one image batch at a time."""

    def __init__(self, flatbuffer: bytes, num_threads: int = 1):
        with warnings.catch_warnings():  # tf.lite.Interpreter is deprecated in favour of LiteRT
            warnings.simplefilter("ignore")
            self.interpreter = tf.lite.Interpreter(model_content=flatbuffer, num_threads=num_threads)
        self._in = self.interpreter.get_input_details()[0]["index"]
        self._out = self.interpreter.get_output_details()[0]["index"]

    def predict(self, x: np.ndarray, batch_size: int = 100) -> np.ndarray:
        """Logits for images ``x``."""
        out = []
        for s in range(0, len(x), batch_size):
            xb = np.asarray(x[s:s + batch_size], np.float32)
            self.interpreter.resize_tensor_input(self._in, xb.shape)
            self.interpreter.allocate_tensors()
            self.interpreter.set_tensor(self._in, xb)
            self.interpreter.invoke()
            out.append(self.interpreter.get_tensor(self._out).copy())
        return np.concatenate(out)


def accuracy(predict, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of a ``predict(x) -> logits`` function."""
    return float(np.mean(predict(x).argmax(axis=1) == y))


def latency_ms(predict, x: np.ndarray, repeats: int = 50) -> float:
    """Median milliseconds for one single-image prediction (what an on-device app pays)."""
    one = np.asarray(x[:1])
    predict(one)  # warm-up (graph tracing, tensor allocation)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict(one)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def keras_predictor(model: keras.Model, batch_size: int = 256):
    """``predict(x) -> logits`` for a Keras model, called eagerly batch by batch (nothing traced)."""
    def predict(x):
        return np.concatenate([np.asarray(model(np.asarray(x[s:s + batch_size], np.float32), training=False))
                               for s in range(0, len(x), batch_size)])
    return predict


def _gzip_size(data: bytes) -> int:
    """Bytes after gzip (level 9): what zeros from pruning save on disk or on the wire."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


@dataclass(frozen=True)
class ModelReport:
    """One row of the chapter's table: a model variant, its size, accuracy and latency."""

    name: str
    bytes: int
    gzip_bytes: int
    accuracy: float
    latency_ms: float
    sparsity: float = 0.0


def copy_model(model: keras.Model) -> keras.Model:
    """An independent copy with the same weights (``clone_model`` alone copies no weights)."""
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    return twin


def compare(model: keras.Model, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
            *, sparsity: float = 0.8, fine_tune_epochs: int = 1, calibration: int = 300,
            seed: int = 0) -> list[ModelReport]:
    """Size, accuracy and latency of the trained model and its compressed variants.

    Rows: the float32 TFLite model, the int8 TFLite model, the pruned (``sparsity``) and
    fine-tuned model in float32 and in int8. ``model`` is not modified (pruning works on a
    copy). ``train`` supplies the fine-tuning data and the int8 calibration images.
    """
    (x_train, y_train), (x_test, y_test) = train, test
    rng = np.random.default_rng(seed)
    calib = x_train[rng.choice(len(x_train), size=min(calibration, len(x_train)), replace=False)]

    def row(name: str, m: keras.Model, int8: bool) -> ModelReport:
        flat = to_tflite(m, calib if int8 else None)
        runner = TFLiteModel(flat)
        return ModelReport(name, len(flat), _gzip_size(flat), accuracy(runner.predict, x_test, y_test),
                           latency_ms(runner.predict, x_test), sparsity_of(m))

    rows = [row("float32", model, False), row("int8", model, True)]
    pruned = copy_model(model)
    masks = magnitude_masks(pruned, sparsity)
    apply_masks(pruned, masks)
    fine_tune_pruned(pruned, masks, x_train, y_train, epochs=fine_tune_epochs, seed=seed)
    tag = f"pruned {sparsity:.0%}"
    rows += [row(f"{tag} float32", pruned, False), row(f"{tag} + int8", pruned, True)]
    return rows


def table(rows: list[ModelReport]) -> str:
    """The chapter's size / accuracy / latency table, sizes relative to the first row."""
    base = rows[0]
    lines = [f"{'model':<22} {'KB':>7} {'KB gz':>7} {'x smaller (gz)':>15} {'accuracy':>8} "
             f"{'ms/image':>8} {'sparsity':>8}"]
    for r in rows:
        lines.append(f"{r.name:<22} {r.bytes / 1e3:>7.1f} {r.gzip_bytes / 1e3:>7.1f} "
                     f"{base.gzip_bytes / r.gzip_bytes:>15.2f} {r.accuracy:>8.4f} {r.latency_ms:>8.3f} "
                     f"{r.sparsity:>8.2f}")
    return "\n".join(lines)
