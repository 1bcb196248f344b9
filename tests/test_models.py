import time

import keras
import numpy as np
import pytest

from fedtl_helpers.modeling import models


def test_builtin_model_shapes_and_head():
    model = models.build_model("builtin_cnn", None, num_classes=10)
    assert model.output_shape == (None, 10)
    head = model.get_layer("head")
    assert [layer.name for layer in head.layers[1:]] == ["dense_128", "logits"]
    assert model.get_layer("backbone").output_shape == (None, 128)
    assert 100_000 < model.get_layer("backbone").count_params() < 200_000


def test_builtin_weights_load_and_differ_from_random():
    pre = models.build_model("builtin_cnn", "builtin").get_layer("backbone").get_weights()
    rnd = models.build_model("builtin_cnn", None).get_layer("backbone").get_weights()
    assert models.builtin_record()["sha256"] == models.sha256_of(models.BUILTIN_WEIGHTS)
    assert any(not np.allclose(a, b) for a, b in zip(pre, rnd))


def test_builtin_weights_checksum_is_enforced(tmp_path, monkeypatch):
    bad = tmp_path / "builtin_cnn.weights.h5"
    bad.write_bytes(models.BUILTIN_WEIGHTS.read_bytes()[:-10] + b"0123456789")
    monkeypatch.setattr(models, "BUILTIN_WEIGHTS", bad)
    with pytest.raises(ValueError, match="SHA-256"):
        models.build_model("builtin_cnn", "builtin")


def test_weights_file_of_wrong_architecture(tmp_path):
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    path = tmp_path / "other.weights.h5"
    other.save_weights(path)
    with pytest.raises(ValueError, match="does not fit backbone"):
        models.build_model("builtin_cnn", str(path))


def test_weights_path_roundtrip(tmp_path):
    src = models.build_model("builtin_cnn", None, seed=5).get_layer("backbone")
    path = tmp_path / "mine.weights.h5"
    src.save_weights(path)
    loaded = models.build_model("builtin_cnn", str(path), seed=9).get_layer("backbone")
    for a, b in zip(src.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_imagenet_offline_fails_fast_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    fname, _, md5 = models.IMAGENET_FILES["resnet50"]
    # A closed local port: refused at once, as an offline machine's lookup fails at once.
    monkeypatch.setitem(models.IMAGENET_FILES, "resnet50", (fname, "http://127.0.0.1:9/", md5))
    t0 = time.perf_counter()
    with pytest.raises(FileNotFoundError, match=fname) as err:
        models.imagenet_weights_path("resnet50", 32)
    assert str(tmp_path / "models" / fname) in str(err.value)
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"backbone": "vgg"}, "backbone='vgg'"),
        ({"backbone": "resnet50", "weights": "builtin"}, "weights='builtin'"),
        ({"backbone": "builtin_cnn", "weights": "imagenet"}, "weights='imagenet'"),
        ({"input_shape": (32, 32, 1)}, "input_shape"),
        ({"input_shape": (16, 16, 3)}, "input_size=16"),
        ({"weights": "/no/such.weights.h5"}, "no such file"),
        ({"num_classes": 1}, "num_classes"),
    ],
)
def test_bad_model_arguments(kwargs, match):
    kwargs.setdefault("weights", None)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        models.build_model(**kwargs)


@pytest.mark.parametrize("backbone, size, fmap", [("resnet50", 32, 1), ("resnet50", 96, 3),
                                                   ("mobilenet_v2", 96, 3)])
def test_keras_application_backbones_build_with_resize(backbone, size, fmap):
    model = models.build_model(backbone, None, input_size=size if size != 32 else None)
    app = next(la for la in model.get_layer("backbone").layers if isinstance(la, keras.Model))
    assert app.output_shape[1:3] == (fmap, fmap)  # ResNet50 at 32x32 ends in 1x1 maps
    assert model.output_shape == (None, 10)


def test_strategies_and_mask():
    model = models.build_model("builtin_cnn", None)
    n_head = len(model.get_layer("head").weights)
    models.set_strategy(model, "builtin_cnn", "head")
    assert sum(models.updatable_mask(model)) == n_head
    models.set_strategy(model, "builtin_cnn", "full")
    assert all(models.updatable_mask(model))
    models.set_strategy(model, "builtin_cnn", "partial", unfreeze_blocks=1)
    body = model.get_layer("backbone")
    trainable = {la.name for la in body.layers if la.weights and la.trainable}
    assert trainable == {"block3_a_conv", "block3_a_bn"}
    with pytest.raises(ValueError, match="unfreeze_blocks=9"):
        models.set_strategy(model, "builtin_cnn", "partial", unfreeze_blocks=9)


def test_frozen_batchnorm_stays_in_inference_mode():
    model = models.build_model("builtin_cnn", "builtin")
    models.set_strategy(model, "builtin_cnn", "head")
    bn = model.get_layer("backbone").get_layer("block1_a_bn")
    before = [w.copy() for w in bn.get_weights()]
    x = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype("float32")
    out_train = model(x, training=True).numpy()
    out_infer = model(x, training=False).numpy()
    np.testing.assert_allclose(out_train, out_infer, rtol=1e-5, atol=1e-5)
    for a, b in zip(before, bn.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_resnet_and_mobilenet_blocks():
    for name, last in (("resnet50", "conv5_block3_3_bn"), ("mobilenet_v2", "Conv_1_bn")):
        blocks = models.backbone_blocks(models.build_backbone(name), name)
        assert len(blocks) >= 5
        assert blocks[-1][-1].name == last


def test_initial_model_is_the_same_whatever_other_threads_draw():
    """Issue 31: Flower's heartbeat thread draws from Python's global ``random`` while the
    ServerApp builds its model. Every initialiser gets its own seed (``initializer_seeds``),
    so a thread drawing all the time changes nothing, bit for bit."""
    import random
    import threading

    plain = models.build_model(weights=None, seed=3).get_weights()
    stop = threading.Event()

    def draw() -> None:
        while not stop.is_set():
            random.uniform(-0.1, 0.1)

    thread = threading.Thread(target=draw)
    thread.start()
    try:
        busy = models.build_model(weights=None, seed=3).get_weights()
    finally:
        stop.set()
        thread.join()
    assert all(np.array_equal(a, b) for a, b in zip(plain, busy, strict=True))
    assert not np.array_equal(plain[0], models.build_model(weights=None, seed=4).get_weights()[0])
