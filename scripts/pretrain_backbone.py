"""Pretrain the built-in backbone on the *source* task and ship its weights.

Chapter: "Transfer learning overview". The target task of the book is the 10 shapes of
``shapes.TARGET_SHAPES``; this script trains the ``builtin_cnn`` backbone on 20 *other* shapes
(``shapes.SOURCE_SHAPES``) from the same generator, so that "pretrained vs random init" is a
real transfer experiment offline, like ImageNet -> CIFAR-10 for our users online.

Usage::

    python scripts/pretrain_backbone.py            # writes fedtl_helpers/weights/builtin_cnn.*
    python scripts/pretrain_backbone.py --out /tmp/w --epochs 1   # a quick try elsewhere

Reproducible from ``--seed``; writes ``builtin_cnn.weights.h5`` (the backbone only, no head)
and ``builtin_cnn.json`` (SHA-256 and a record of how the file was made), both atomically.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fedtl_helpers.core.storage import atomic_write_bytes, atomic_write_text  # noqa: E402
from fedtl_helpers.inputs import shapes  # noqa: E402
from fedtl_helpers.modeling import models


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(models.WEIGHTS_DIR), help="output folder")
    p.add_argument("--n-train", type=int, default=30_000)
    p.add_argument("--n-test", type=int, default=4_000)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()
    t0 = time.perf_counter()
    (x, y), (xt, yt) = shapes.load_shapes(args.n_train, args.n_test, seed=args.seed, task="source")
    body = models.build_backbone("builtin_cnn")
    head = models.build_head(body.output.shape[-1], len(shapes.SOURCE_SHAPES))
    inputs = keras.Input((32, 32, 3))
    net = keras.Model(inputs, head(body(inputs)))
    steps = args.epochs * -(-args.n_train // args.batch_size)
    net.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(args.lr, steps)),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    net.fit(x.astype(np.float32), y, batch_size=args.batch_size, epochs=args.epochs, verbose=2,
            shuffle=True)
    _, acc = net.evaluate(xt.astype(np.float32), yt, verbose=0)

    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:  # Keras wants a real path; then move atomically
        tmp_file = Path(tmp) / models.BUILTIN_WEIGHTS.name
        body.save_weights(tmp_file)
        atomic_write_bytes(out / models.BUILTIN_WEIGHTS.name, tmp_file.read_bytes())
    record = {
        "sha256": models.sha256_of(out / models.BUILTIN_WEIGHTS.name),
        "backbone": "builtin_cnn",
        "source_task": "shapes, task='source': shapes that are none of the target classes",
        "source_classes": list(shapes.SOURCE_SHAPES),
        "n_train": args.n_train, "epochs": args.epochs, "batch_size": args.batch_size,
        "learning_rate": args.lr, "seed": args.seed,
        "source_test_accuracy": round(float(acc), 4),
        "seconds": round(time.perf_counter() - t0, 1),
        "parameters": int(body.count_params()),
        "made_with": f"tensorflow {tf.__version__}, keras {keras.__version__}",
        "date": datetime.date.today().isoformat(),
        "command": "python scripts/pretrain_backbone.py " + " ".join(argv or sys.argv[1:]),
    }
    atomic_write_text(out / models.BUILTIN_RECORD.name, json.dumps(record, indent=1) + "\n")
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main()
