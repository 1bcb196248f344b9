"""Feature caching: with a frozen backbone, compute each client's features once.

Chapter: "Client fine-tuning". When clients train only the head (``strategy="head"``), the
backbone is a fixed function, evaluated in inference mode (frozen BatchNormalization uses its
moving statistics). Running it on the same images every round and every epoch is wasted work:
the features can be computed once per client and the head trained on them. The model is the
same function, so accuracies match the uncached run up to float rounding; only the time changes
(``benchmarks/bench_feature_cache.py`` measures by how much).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


class FeatureExtractor:
    """Runs a model's ``"backbone"`` sub-model in inference mode, batch by batch."""

    def __init__(self, model: keras.Model):
        self.backbone = model.get_layer("backbone")
        shape = (None, *self.backbone.input_shape[1:])
        self._run = tf.function(
            lambda x: self.backbone(tf.cast(x, tf.float32), training=False),
            input_signature=[tf.TensorSpec(shape, tf.uint8)])

    def __call__(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Pooled backbone features, float32 ``(len(x), feature_dim)``."""
        return np.concatenate([self._run(x[s:s + batch_size]).numpy()
                               for s in range(0, len(x), batch_size)])
