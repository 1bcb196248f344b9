"""Models: a pretrained backbone plus the article's new head, and who may train what.

Chapters: "Transfer learning overview", "Pretrained initialisation of the global model" and
"Client fine-tuning".

A model built here is ``Input -> backbone -> head`` where

* ``backbone`` (a sub-model named ``"backbone"``) holds the input preprocessing, an optional
  resize, the convolutional network and the global average pooling. Pooling sits *inside* the
  backbone because it has no weights: caching the pooled features (see ``features.py``) is then
  exactly the same computation as running the model, with 1/64 of the memory.
* ``head`` (a sub-model named ``"head"``) is the article's new top: ``Dense(128, relu)`` then
  ``Dense(num_classes)``. It outputs *logits*: the article's softmax output plus
  ``sparse_categorical_crossentropy`` computes ``log(softmax)`` in two steps, which loses
  precision; the loss takes ``from_logits=True`` instead. Predictions are the same argmax.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import weakref
from collections.abc import Iterator
from pathlib import Path

import h5py
import keras
import numpy as np
from keras import layers

from ..core.config import BACKBONES, STRATEGIES

WEIGHTS_DIR = Path(__file__).parents[1] / "weights"
BUILTIN_WEIGHTS = WEIGHTS_DIR / "builtin_cnn.weights.h5"
BUILTIN_RECORD = WEIGHTS_DIR / "builtin_cnn.json"

# Keras' own file names and hashes for ImageNet weights without the top (keras.applications).
_KERAS_APP_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"
IMAGENET_FILES = {
    "resnet50": ("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 _KERAS_APP_BASE + "resnet/", "4d473c1dd8becc155b73f8504c6f6626"),
    "mobilenet_v2": ("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5",
                     _KERAS_APP_BASE + "mobilenet_v2/", None),
}
_MOBILENET_ROWS = (96, 128, 160, 192, 224)


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# BatchNormalization's moving statistics in federated training. Keras' default momentum, 0.99,
# suits centralised training (thousands of steps per epoch): the statistics trail the weights by
# about 100 steps. A client takes only n_k / batch_size steps per round (about 13 to 30 here), and
# the server averages the clients' statistics, so with 0.99 they move only ~12-25% of the way
# per round and lag the weights for many rounds: the model *trains* well (training mode uses
# batch statistics) but *evaluates* badly (inference mode uses the stale moving ones). 0.9
# forgets 90% within 22 steps, so each round's statistics describe that round's weights.
# Measured in chapter "Pretrained initialisation of the global model".
FEDERATED_BN_MOMENTUM = 0.9


class InitializerSeeds:
    """Seeds for the random initialisers ``build_model`` creates, one per layer in the order
    it creates them (``next(seeds)``); ``drawn`` counts them.

    They are the numbers Keras itself draws for an initialiser without a seed
    (``randint(1, 10**9)`` from Python's ``random`` after ``keras.utils.set_random_seed(seed)``),
    so the models are the ones Keras built before, but from a private ``random.Random(seed)``:
    another thread drawing from the global ``random`` meanwhile (Flower's heartbeat in the
    ServerApp does) cannot change them.
    """

    def __init__(self, seed: int):
        self._rng = random.Random(seed)
        self.drawn = 0

    def __iter__(self) -> InitializerSeeds:
        return self

    def __next__(self) -> int:
        self.drawn += 1
        return self._rng.randint(1, int(1e9))


def initializer_seeds(seed: int) -> InitializerSeeds:
    """The ``InitializerSeeds`` of ``build_model(seed=seed)``."""
    return InitializerSeeds(seed)


def _kernel_init(seeds: Iterator[int] | None) -> keras.initializers.Initializer | str:
    return "glorot_uniform" if seeds is None else keras.initializers.GlorotUniform(seed=next(seeds))


def _builtin_cnn_layers(x, seeds: Iterator[int] | None = None):
    """Three blocks of conv-BN-ReLU for 32x32 inputs (~145k weights, 8x8x128 features)."""
    def conv_bn(x, filters, name):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv",
                          kernel_initializer=_kernel_init(seeds))(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x)

    x = conv_bn(x, 32, "block1_a")
    x = conv_bn(x, 32, "block1_b")
    x = layers.MaxPooling2D(name="block1_pool")(x)
    x = conv_bn(x, 64, "block2_a")
    x = conv_bn(x, 64, "block2_b")
    x = layers.MaxPooling2D(name="block2_pool")(x)
    return conv_bn(x, 128, "block3_a")


def build_backbone(name: str = "builtin_cnn", input_shape: tuple[int, int, int] = (32, 32, 3),
                   input_size: int | None = None, seeds: Iterator[int] | None = None) -> keras.Model:
    """Backbone with preprocessing and pooling, randomly initialised (see ``load_weights``).

    Parameters
    ----------
    name
        ``"builtin_cnn"`` (small CNN for 32x32), ``"resnet50"`` (the article's) or
        ``"mobilenet_v2"``.
    input_shape
        Shape of the raw images, pixel values in [0, 255].
    input_size
        If given, images are resized (bilinear) to ``input_size`` x ``input_size`` first.
        ResNet50 at 32x32 ends in 1x1 feature maps, too little for ImageNet features to
        transfer; 96 or 128 keeps 3x3 or 4x4.
    """
    if name not in BACKBONES:
        raise ValueError(f"backbone={name!r} is unknown: allowed {', '.join(map(repr, BACKBONES))}.")
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"input_shape={input_shape!r} is invalid: allowed (height, width, 3) RGB.")
    size = input_size or min(input_shape[:2])
    if size < 32:
        raise ValueError(f"input_size={size} is too small for backbone={name!r}: allowed >= 32 "
                         "(resize small images with input_size).")
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    if input_size is not None:
        x = layers.Resizing(input_size, input_size, name="resize")(x)
    if name == "builtin_cnn":
        x = layers.Rescaling(1 / 255.0, name="scale")(x)
        x = _builtin_cnn_layers(x, seeds)
    else:
        app_shape = (input_size or input_shape[0], input_size or input_shape[1], 3)
        if name == "resnet50":
            x = layers.Lambda(keras.applications.resnet50.preprocess_input, name="preprocess")(x)
            app = keras.applications.ResNet50(include_top=False, weights=None, input_shape=app_shape)
        else:
            x = layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")(x)
            app = keras.applications.MobileNetV2(include_top=False, weights=None,
                                                 input_shape=app_shape)
        x = app(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, x, name="backbone")


def build_head(feature_dim: int, num_classes: int = 10,
               seeds: Iterator[int] | None = None) -> keras.Model:
    """The article's new top: Dense(128, relu) -> Dense(num_classes) logits (kernels seeded
    from ``seeds`` if given, see ``initializer_seeds``)."""
    inputs = keras.Input((feature_dim,), name="features")
    x = layers.Dense(128, activation="relu", name="dense_128", kernel_initializer=_kernel_init(seeds))(inputs)
    outputs = layers.Dense(num_classes, name="logits", kernel_initializer=_kernel_init(seeds))(x)
    return keras.Model(inputs, outputs, name="head")


def build_model(backbone: str = "builtin_cnn", weights: str | None = "builtin",
                num_classes: int = 10, input_shape: tuple[int, int, int] = (32, 32, 3),
                input_size: int | None = None, seed: int = 0,
                bn_momentum: float | None = FEDERATED_BN_MOMENTUM) -> keras.Model:
    """Backbone (with initial ``weights``) + new head, as one Keras model.

    Parameters
    ----------
    backbone, input_shape, input_size
        See ``build_backbone``.
    weights
        ``"builtin"`` (our pretrained ``builtin_cnn``, shipped with the package),
        ``"imagenet"`` (Keras' download, cached in ``$KERAS_HOME/models``), a path to a
        ``.weights.h5`` file saved from a backbone of the same architecture, or ``None``
        (random init).
    num_classes
        Size of the new head's output.
    seed
        Seeds the random initialisation of the head (and of the backbone if ``weights=None``):
        every initialiser of the built-in CNN and the head gets its own seed explicitly
        (``initializer_seeds``), so no other thread can change the model. The Keras
        applications' layers (``resnet50``, ``mobilenet_v2``) take theirs from Keras' global
        generator, seeded here; that matters only with ``weights=None``.
    bn_momentum
        Momentum of every BatchNormalization layer's moving statistics (see
        ``set_bn_momentum``); ``None`` keeps the architecture's own (0.99 for Keras layers).

    Raises
    ------
    ValueError
        Unknown names, an unsupported input shape, or a weights file that does not fit.
    FileNotFoundError
        ImageNet weights are not cached and cannot be downloaded (the message says which
        file to put where).
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r} is invalid: allowed an integer >= 2.")
    keras.utils.set_random_seed(seed)  # TensorFlow's and the Keras applications' generators
    seeds = initializer_seeds(seed)
    body = build_backbone(backbone, input_shape, input_size, seeds)
    load_weights(body, backbone, weights, input_size or input_shape[0])
    head = build_head(body.output.shape[-1], num_classes, seeds)
    # Leave Keras' global generator where its own draws used to leave it: what draws from it
    # later (the initialisers of LoRA adapters, set_strategy) gets the numbers it always got.
    for _ in range(seeds.drawn):
        random.randint(1, int(1e9))
    inputs = keras.Input(input_shape, name="image")
    model = keras.Model(inputs, head(body(inputs)), name=f"{backbone}_transfer")
    if bn_momentum is not None:
        set_bn_momentum(model, bn_momentum)
    return model


def batchnorm_layers(model: keras.Model) -> list[layers.BatchNormalization]:
    """Every BatchNormalization layer of ``model``, nested models included, in network order."""
    return [layer for layer in leaf_layers(model) if isinstance(layer, layers.BatchNormalization)]


def set_bn_momentum(model: keras.Model, momentum: float) -> None:
    """Set the moving-statistics momentum of every BatchNormalization layer of ``model``.

    In federated training choose it so that the statistics forget within one round's local
    steps (``momentum ** steps`` small): see ``FEDERATED_BN_MOMENTUM``. Set it before the first
    training step is traced.
    """
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
        raise ValueError(f"bn_momentum={momentum!r} is invalid: allowed a number in [0, 1).")
    for layer in batchnorm_layers(model):
        layer.momentum = float(momentum)


def _recalibrated_layers(model: keras.Model, trainable_only: bool) -> list[layers.BatchNormalization]:
    body = model.get_layer("backbone")
    nested = [layer for layer in batchnorm_layers(body) if layer not in body.layers]
    if nested:
        raise ValueError(f"recalibrate_batchnorm supports backbones whose BatchNormalization layers "
                         f"are the backbone's own layers (builtin_cnn), not {len(nested)} nested ones.")
    return [bn for bn in batchnorm_layers(body) if bn.trainable or not trainable_only]


_PROBES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {layer name: compiled probe}


def _moments_probe(model: keras.Model, bn: layers.BatchNormalization):
    """A compiled function ``x -> (count, sum, sum of squares)`` per channel of ``bn``'s inputs,
    in float64; built once per model and layer (the simulation reuses one model for every
    client and round: ``set_weights`` changes the variables the function reads)."""
    import tensorflow as tf

    probes = _PROBES.setdefault(model, {})
    if bn.name not in probes:
        body = model.get_layer("backbone")
        net = keras.Model(body.input, bn.input)

        @tf.function(reduce_retracing=True)
        def probe(x):
            a = tf.cast(net(x, training=False), tf.float64)
            a = tf.reshape(a, [-1, tf.shape(a)[-1]])  # every position of every image is one sample
            return tf.shape(a)[0], tf.reduce_sum(a, 0), tf.reduce_sum(a * a, 0)

        probes[bn.name] = probe
    return probes[bn.name]


def batchnorm_moments(model: keras.Model, x, batch_size: int = 250, *,
                      trainable_only: bool = False) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Recalibrate ``model`` on ``x`` in place and return, per recalibrated BatchNorm layer,
    ``(count, mean, mean of squares)`` of its inputs: what one client sends for
    ``pool_batchnorm_moments`` (per-channel sums over its own data; no image leaves it).

    Layer by layer, bottom to top, with the layers below already recalibrated on ``x``.
    ``trainable_only`` leaves frozen layers (a frozen backbone's) as they are. The sums are
    taken in a compiled graph (float64), so only two vectors per batch leave it.
    """
    out = []
    for bn in _recalibrated_layers(model, trainable_only):
        probe = _moments_probe(model, bn)
        sums, sq, count = 0.0, 0.0, 0
        for s in range(0, len(x), batch_size):
            n, a, a2 = probe(x[s:s + batch_size])
            sums, sq, count = sums + a.numpy(), sq + a2.numpy(), count + int(n)
        mean = sums / count
        bn.moving_mean.assign(mean.astype("float32"))
        bn.moving_variance.assign(np.maximum(sq / count - mean * mean, 0).astype("float32"))
        out.append((count, mean, sq / count))
    return out


def pool_batchnorm_moments(moments: list[list[tuple[int, np.ndarray, np.ndarray]]]
                           ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The server's half of federated recalibration: per layer, the pooled mean and variance.

    ``moments[k][l]`` is client ``k``'s ``(count, mean, mean of squares)`` for layer ``l``.
    Pooled over clients weighted by count: ``mean = sum n_k m_k / n`` and
    ``variance = sum n_k s_k / n - mean**2`` (clamped at 0), the statistics of all clients'
    data together, for each layer given the layers below as each client recalibrated them.
    """
    if not moments or any(len(m) != len(moments[0]) for m in moments):
        raise ValueError("moments must hold one list per client, each with one entry per BatchNorm layer, "
                         f"got {len(moments)} client(s) with {[len(m) for m in moments]} layers")
    pooled = []
    for per_layer in zip(*moments):
        n = np.array([c for c, _, _ in per_layer], dtype="float64")
        w = n / n.sum()
        mean = sum(wk * m for wk, (_, m, _) in zip(w, per_layer))
        sq = sum(wk * q for wk, (_, _, q) in zip(w, per_layer))
        pooled.append((mean, np.maximum(sq - mean * mean, 0.0)))
    return pooled


def recalibrate_batchnorm(model: keras.Model, x, batch_size: int = 250) -> None:
    """Replace every BatchNormalization layer's moving statistics by exact ones, in place.

    Layer by layer, bottom to top, the mean and variance of the layer's inputs over all of
    ``x`` (with the layers below already recalibrated): the statistics that the current weights
    really produce on ``x`` ("precise BN", Wu & Johnson 2021). Used to measure how far the
    moving statistics lag the weights; in federated learning ``x`` must be data the caller may
    use (a client's own, or the training set in a simulation), never the test set.
    """
    batchnorm_moments(model, x, batch_size)


def recalibrate_batchnorm_federated(model: keras.Model, client_inputs, batch_size: int = 250, *,
                                    trainable_only: bool = True) -> None:
    """Federated recalibration, in place: each client recomputes the BatchNorm statistics of
    the current weights on its own data (``batchnorm_moments``), the server pools them
    (``pool_batchnorm_moments``) and writes them into ``model``.

    Chapter "Pretrained initialisation of the global model" (``ExperimentConfig.bn_recalibration``):
    the moving statistics the clients average lag the weights; these describe them. Each client
    sends two numbers per channel and layer, never an image. With ``trainable_only`` a frozen
    layer keeps its (pretrained) statistics.
    """
    start = model.get_weights()
    moments = []
    for x in client_inputs:
        model.set_weights(start)  # every client starts from the global weights
        moments.append(batchnorm_moments(model, x, batch_size, trainable_only=trainable_only))
    model.set_weights(start)
    for bn, (mean, var) in zip(_recalibrated_layers(model, trainable_only), pool_batchnorm_moments(moments)):
        bn.moving_mean.assign(mean.astype("float32"))
        bn.moving_variance.assign(var.astype("float32"))


def load_weights(body: keras.Model, backbone: str, weights: str | None, rows: int) -> None:
    """Load initial backbone weights in place (see ``build_model`` for ``weights``)."""
    if weights is None:
        return
    if weights == "builtin":
        if backbone != "builtin_cnn":
            raise ValueError(f"weights='builtin' exists only for backbone='builtin_cnn', "
                             f"not {backbone!r}: allowed 'imagenet', a path or None.")
        _load_checked(body, BUILTIN_WEIGHTS, builtin_record()["sha256"])
    elif weights == "imagenet":
        if backbone not in IMAGENET_FILES:
            raise ValueError(f"weights='imagenet' exists only for {sorted(IMAGENET_FILES)}, "
                             f"not backbone={backbone!r}.")
        app = next(layer for layer in body.layers if isinstance(layer, keras.Model))
        app.load_weights(imagenet_weights_path(backbone, rows))
    else:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"weights={weights!r}: no such file.")
        _load_checked(body, Path(weights), None)


def check_weights(backbone: str, weights: str | None, input_size: int | None = None,
                  input_shape: tuple[int, int, int] = (32, 32, 3)) -> None:
    """Check that ``weights`` exist, load and fit ``backbone`` before any data is loaded.

    Builds the backbone alone (seconds for ResNet50, far less than a dataset) and loads the
    weights into it exactly as ``build_model`` will, so a missing, garbage or mismatched file,
    or ImageNet weights that are neither cached nor downloadable, fail up front.

    Raises
    ------
    FileNotFoundError, ValueError
        As ``build_model``: what is missing or does not fit, and how to fix it.
    """
    body = build_backbone(backbone, input_shape, input_size)
    load_weights(body, backbone, weights, input_size or input_shape[0])


def builtin_record() -> dict:
    """How the built-in weights were made (source task, seed, accuracy, SHA-256)."""
    if not BUILTIN_RECORD.is_file() or not BUILTIN_WEIGHTS.is_file():
        raise FileNotFoundError(
            f"built-in weights missing ({BUILTIN_WEIGHTS}); recreate them with "
            "`python scripts/pretrain_backbone.py`.")
    return json.loads(BUILTIN_RECORD.read_text())


def _load_checked(body: keras.Model, path: Path, sha256: str | None) -> None:
    if sha256 is not None:
        actual = sha256_of(path)
        if actual != sha256:
            raise ValueError(f"weights file {path} has SHA-256 {actual}, expected {sha256}: "
                             "the file is corrupt or was replaced; re-create it with "
                             "`python scripts/pretrain_backbone.py`.")
    # Keras 3 loads a partly matching file with only a warning, leaving random weights
    # behind; compare the tensor shapes first so a wrong file is an error, not a surprise.
    try:
        with h5py.File(path, "r") as f:
            stored: list[tuple] = []
            f.visititems(lambda _, obj: stored.append(obj.shape)
                         if isinstance(obj, h5py.Dataset) else None)
    except OSError as e:
        raise ValueError(f"weights file {path} is not a readable HDF5 weights file: {e}") from e
    expected = sorted(tuple(w.shape) for w in body.weights)
    if sorted(stored) != expected:
        raise ValueError(f"weights file {path} does not fit backbone {body.name!r}: it holds "
                         f"{len(stored)} tensors, the backbone has {len(expected)} "
                         "(or their shapes differ). Was it saved from another architecture?")
    try:
        body.load_weights(path)
    except Exception as e:  # Keras raises several types for a mismatched file
        raise ValueError(f"weights file {path} does not fit backbone {body.name!r}: {e}") from e


def imagenet_weights_path(backbone: str, rows: int) -> str:
    """Path of Keras' ImageNet weights file, downloading it if allowed and reachable.

    Offline, this fails at once with a message naming the file Keras expects and where to
    put it, instead of a long network timeout deep inside Keras.
    """
    fname, base, md5 = IMAGENET_FILES[backbone]
    if backbone == "mobilenet_v2":
        fname = fname.format(rows=rows if rows in _MOBILENET_ROWS else 224)
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    local = cache / fname
    if local.is_file():
        return str(local)
    try:
        return keras.utils.get_file(fname, base + fname, cache_subdir="models", file_hash=md5)
    except Exception as e:
        raise FileNotFoundError(
            f"ImageNet weights for {backbone} are not cached and could not be downloaded "
            f"({type(e).__name__}: {e}). Download {base + fname} on a connected machine and "
            f"put it at {local} (or set $KERAS_HOME), or use weights='builtin' / None."
        ) from e


# ---------------------------------------------------------------- fine-tuning strategies
_BLOCK_PATTERNS = {
    "builtin_cnn": re.compile(r"^(block\d+)_"),
    "resnet50": re.compile(r"^(conv\d)_"),
    "mobilenet_v2": re.compile(r"^(block_\d+)_"),
}


def leaf_layers(model: keras.Model):
    """Layers of ``model`` in network order, descending into nested models."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer


def backbone_blocks(body: keras.Model, backbone: str) -> list[list[keras.layers.Layer]]:
    """Layers with weights grouped into blocks, bottom to top (used by ``"partial"``)."""
    pattern = _BLOCK_PATTERNS[backbone]
    leaves = [layer for layer in leaf_layers(body) if layer.weights]
    blocks: dict[str, list] = {}
    for layer in leaves:
        m = pattern.match(layer.name)
        key = m.group(1) if m else ("top" if layer.name.startswith(("Conv_1", "out_relu"))
                                    else "stem")
        blocks.setdefault(key, []).append(layer)
    ordered = list(blocks.values())
    # MobileNetV2's "top" layers come last in the network; keep them as its last block.
    if "top" in blocks:
        ordered.remove(blocks["top"])
        ordered.append(blocks["top"])
    return ordered


LORA_STRATEGIES = ("lora", "ffa_lora")  # strategies that add low-rank adapters
# Layers that take low-rank adapters: Keras 3's own ``enable_lora`` (Dense, EinsumDense, Conv).
_LORA_LAYERS = (layers.Dense, layers.EinsumDense, layers.Conv2D)


def set_strategy(model: keras.Model, backbone: str, strategy: str, unfreeze_blocks: int = 1,
                 lora_rank: int = 4) -> None:
    """Decide which tensors clients train: ``"head"``, ``"partial"``, ``"full"``, ``"lora"`` or ``"bitfit"``.

    Frozen layers keep ``trainable=False``. For BatchNormalization, Keras then runs the layer
    in inference mode: it normalises with the pretrained moving statistics and does not update
    them. That matters: a client's small, skewed batches would otherwise shift the statistics
    the frozen convolutions were trained with, and the federated average of such drifting
    statistics degrades every client's features.

    ``"lora"`` (chapter "Parameter-efficient federated fine-tuning") calls Keras'
    ``enable_lora(lora_rank)`` on every conv and dense layer of the backbone: the layer computes
    with ``W + A @ B`` (``A``: ``(..., in, r)``, ``B``: ``(r, out)``, ``B`` starts at zero), ``W``
    and the biases stay frozen, BatchNormalization stays in inference mode, and only ``A``,
    ``B`` and the head train. Adapters cannot be removed again: a model that has them only
    takes ``"lora"`` (or ``"ffa_lora"``). ``"ffa_lora"`` is FFA-LoRA (Sun et al., ICLR 2024): the
    same adapters with ``A`` frozen at its random initialisation, so only ``B`` (and the head)
    trains and is sent; every client multiplies by the same ``A``, so the mean of the ``B``s gives
    exactly the mean of the updates ``A @ B`` (averaging both factors does not: ``lora_factor_gap``),
    for half the adapter's upload or less. ``"bitfit"`` trains the backbone's biases and normalisation layers
    (scale, offset and, in training mode, their moving statistics) plus the head.
    ``"lpft"`` is a schedule of two of these (``phase_strategy``), not a set of tensors.
    """
    if strategy not in STRATEGIES or strategy == "lpft":
        allowed = ", ".join(repr(s) for s in STRATEGIES if s != "lpft")
        raise ValueError(f"strategy={strategy!r} is invalid here: allowed {allowed} "
                         "('lpft' switches between two of them: see phase_strategy).")
    body = model.get_layer("backbone")
    leaves = [layer for layer in leaf_layers(body) if layer.weights]
    has_lora = any(getattr(layer, "lora_enabled", False) for layer in leaves)
    if has_lora and strategy not in LORA_STRATEGIES:
        raise ValueError(f"strategy={strategy!r} is invalid for a model with LoRA adapters: allowed "
                         "'lora' or 'ffa_lora' (Keras cannot remove adapters; build a new model).")
    for layer in leaves:  # undo a previous strategy's per-tensor freezing (bitfit, lora)
        layer.trainable = True
        if not isinstance(layer, layers.BatchNormalization):
            for v in layer.weights:
                v.trainable = not (getattr(layer, "lora_enabled", False) and v is layer._kernel)
    body.trainable = strategy != "head"
    if strategy == "partial":
        blocks = backbone_blocks(body, backbone)
        if not 1 <= unfreeze_blocks <= len(blocks):
            raise ValueError(f"unfreeze_blocks={unfreeze_blocks} is invalid for {backbone}: "
                             f"allowed 1..{len(blocks)}.")
        for block in blocks[:-unfreeze_blocks]:
            for layer in block:
                layer.trainable = False
    elif strategy in LORA_STRATEGIES:
        if isinstance(lora_rank, bool) or not isinstance(lora_rank, int) or lora_rank < 1:
            raise ValueError(f"lora_rank={lora_rank!r} is invalid: allowed an integer >= 1.")
        for layer in leaves:
            if isinstance(layer, layers.BatchNormalization):
                layer.trainable = False  # inference mode: pretrained statistics, nothing sent
            elif isinstance(layer, _LORA_LAYERS):
                if not layer.lora_enabled:
                    layer.enable_lora(lora_rank)
                a_trains = strategy == "lora"  # FFA-LoRA keeps A at its random initialisation
                for v in layer.weights:  # only the adapters train, not W nor the bias
                    v.trainable = v is layer.lora_kernel_b or (a_trains and v is layer.lora_kernel_a)
            else:
                layer.trainable = False
    elif strategy == "bitfit":
        for layer in leaves:
            if not isinstance(layer, layers.BatchNormalization):
                for v in layer.weights:
                    v.trainable = v is getattr(layer, "bias", None)
    model.get_layer("head").trainable = True


def phase_strategy(strategy: str, round_: int, switch_round: int, then: str = "full") -> str:
    """The strategy in effect in round ``round_`` (1-based): LP-FT trains the head alone up to
    ``switch_round`` and ``then`` afterwards; every other strategy is the same in every round."""
    if strategy != "lpft":
        return strategy
    return "head" if round_ <= switch_round else then


def lora_pairs(model: keras.Model) -> list[tuple[int, int, int]]:
    """Positions ``(i_W, i_A, i_B)`` in ``model.weights`` of every LoRA layer's frozen kernel
    and its two factors."""
    index = {id(v): i for i, v in enumerate(model.weights)}
    return [(index[id(layer._kernel)], index[id(layer.lora_kernel_a)], index[id(layer.lora_kernel_b)])
            for layer in leaf_layers(model) if getattr(layer, "lora_enabled", False)]


def average_lora_products(global_weights: list[np.ndarray], client_weights: list[list[np.ndarray]],
                          counts: list[int], triples: list[tuple[int, int, int]],
                          scale: float = 1.0) -> list[np.ndarray]:
    """The alternative to averaging LoRA's factors: average the weight changes they make.

    Every tensor is FedAvg-ed (weights ``counts``) except LoRA's: there the server keeps the
    global factors ``A0, B0`` and folds the exact mean of the clients' products into the frozen
    kernel, ``W + scale * (mean_k(A_k @ B_k) - A0 @ B0)``, so the model computes with
    ``W + scale * mean_k(A_k @ B_k)``, what the clients' changes average to. (It also changes
    ``W``, which the clients must then download: the price of exactness.) ``triples`` from
    ``lora_pairs``; ``scale`` is Keras' ``lora_alpha / rank`` (1 by default).
    """
    w = np.asarray(counts, dtype=np.float64)
    if len(client_weights) == 0 or w.shape != (len(client_weights),) or (w <= 0).any():
        raise ValueError(f"counts={counts!r} is invalid: allowed one positive number per client "
                         f"({len(client_weights)} clients).")
    w = w / w.sum()
    out = [sum(wi * np.asarray(c[i], np.float64) for wi, c in zip(w, client_weights)).astype(g.dtype)
           for i, g in enumerate(global_weights)]
    for iw, ia, ib in triples:
        mean_ab = sum(wi * (np.asarray(c[ia], np.float64) @ np.asarray(c[ib], np.float64))
                      for wi, c in zip(w, client_weights))
        a0, b0 = global_weights[ia], global_weights[ib]
        out[iw] = (global_weights[iw] + scale * (mean_ab - a0.astype(np.float64) @ b0)).astype(
            global_weights[iw].dtype)
        out[ia], out[ib] = a0.copy(), b0.copy()
    return out


def lora_factor_gap(a_list: list[np.ndarray], b_list: list[np.ndarray],
                    counts: list[int] | None = None) -> float:
    """How far averaging LoRA's factors is from averaging the updates they make.

    FedAvg averages ``A`` and ``B`` separately, so the server's adapter computes
    ``mean(A_k) @ mean(B_k)``; the clients' weight changes average to ``mean(A_k @ B_k)``.
    The two differ by the cross terms ``mean((A_k - mean A)(B_k - mean B))``: this returns the
    relative Frobenius error ``||mean(A) mean(B) - mean(A B)|| / ||mean(A B)||`` (0 when all
    clients agree). ``counts`` weight the means as FedAvg does (``None``: equal weights).
    """
    if not a_list or len(a_list) != len(b_list):
        raise ValueError(f"a_list and b_list must be non-empty and equally long, got "
                         f"{len(a_list)} and {len(b_list)}.")
    w = np.ones(len(a_list)) if counts is None else np.asarray(counts, dtype=np.float64)
    if w.shape != (len(a_list),) or (w <= 0).any():
        raise ValueError(f"counts={counts!r} is invalid: allowed one positive number per client.")
    w = w / w.sum()
    mean_a = sum(wi * np.asarray(a, np.float64) for wi, a in zip(w, a_list))
    mean_b = sum(wi * np.asarray(b, np.float64) for wi, b in zip(w, b_list))
    mean_ab = sum(wi * (np.asarray(a, np.float64) @ np.asarray(b, np.float64))
                  for wi, a, b in zip(w, a_list, b_list))
    norm = np.linalg.norm(mean_ab)
    return float(np.linalg.norm(mean_a @ mean_b - mean_ab) / norm) if norm > 0 else 0.0


def trainable_count(model: keras.Model) -> int:
    """Number of trainable values (what an optimiser updates; BatchNorm statistics excluded)."""
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


def variance_mask(model: keras.Model) -> list[bool]:
    """For each tensor of ``model.get_weights()``: is it a BatchNorm moving variance?

    A variance cannot be negative, but an aggregate can make it so (DP noise, a server learning
    rate above 1, momentum); evaluated with a negative variance a network outputs NaN, or
    whatever the CPU's kernel makes of it (oneDNN's fused BatchNorm and TensorFlow's own
    differ). The round clamps these tensors at 0 after the server step (``round.run_round``).
    """
    variances = set()
    for layer in leaf_layers(model):
        if isinstance(layer, layers.BatchNormalization):
            variances.add(id(layer.moving_variance))
    return [id(v) in variances for v in model.weights]


def updatable_mask(model: keras.Model) -> list[bool]:
    """For each tensor of ``model.get_weights()``: can local training change it?

    Trainable variables, plus the moving statistics of BatchNormalization layers that train
    (they change in training mode). Frozen tensors need not be sent back to the server.
    """
    changing = {id(v) for v in model.trainable_variables}
    for layer in leaf_layers(model):
        if isinstance(layer, layers.BatchNormalization) and layer.trainable:
            changing.update(id(v) for v in layer.non_trainable_variables)
    return [id(v) in changing for v in model.weights]
