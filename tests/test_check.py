"""The exercise checkers of chapters 1-7, 13 and 14: each accepts a right answer, rejects typical
wrong ones with a message that names the mistake, and treats the notebook's placeholder as
"not attempted" (so the book builds with the exercises untouched).
"""

import math

import numpy as np
import pytest

import fedtl_helpers as fl
from fedtl_helpers.check import ExerciseError

MINE = ["1_1", "1_2", "2_1", "2_2", "2_3", "3_1", "3_2", "3_3", "4_1", "4_2", "5_1", "5_2", "5_3",
        "6_1", "6_2", "6_3", "7_1", "7_2", "13_1", "13_2", "13_3", "14_1", "14_2"]


def check(name):
    return getattr(fl.check, f"exercise_{name}")


def placeholder(*args):
    raise NotImplementedError


def rejects(name, answer, *fragments):
    with pytest.raises(ExerciseError) as err:
        check(name)(answer)
    text = str(err.value)
    assert text.startswith(f"Exercise {name.replace('_', '.')}: ")
    for fragment in fragments:
        assert fragment in text, text
    return text


@pytest.mark.parametrize("name", MINE)
def test_placeholder_is_not_attempted_and_does_not_raise(name, capsys):
    answer = None if name in ("6_3", "13_3", "14_1") else placeholder
    assert not check(name)(answer)
    assert f"Exercise {name.replace('_', '.')}: not attempted yet" in capsys.readouterr().out


def test_registry_lists_my_exercises_in_order():
    names = fl.check.exercises()
    assert all(f"exercise_{n}" in names for n in MINE)
    assert names.index("exercise_2_3") < names.index("exercise_13_1")  # numeric, not string, order


def test_a_crashing_answer_is_reported_with_its_input():
    text = rejects("6_1", lambda w, n: w[5], "raised IndexError", "on [1, 2]")
    assert "Run it on that input" in text


def test_passing_a_call_instead_of_the_function_is_explained():
    rejects("7_1", 0.5, "expected a function, got float")


# ------------------------------------------------------------------ chapter 1
def test_1_1(capsys):
    def right(y_train, y_test):
        return float(np.mean(y_test == np.bincount(y_train).argmax()))

    assert check("1_1")(right) and "correct" in capsys.readouterr().out
    rejects("1_1", lambda a, b: float(np.mean(b == np.bincount(b).argmax())), "from y_train", "0.25")
    rejects("1_1", lambda a, b: 100 * right(a, b), "a percentage")


def test_1_2():
    assert check("1_2")(lambda x: x.astype(np.float32) / 255)
    rejects("1_2", lambda x: x // 255, "dtype uint8", "integer division")
    rejects("1_2", lambda x: x / 255, "dtype float64", "twice the memory")
    rejects("1_2", lambda x: x.astype(np.float32) / 256, "divided by 256")


# ------------------------------------------------------------------ chapter 2
def test_2_1():
    assert check("2_1")(lambda new, old: [n - o for n, o in zip(new, old)])
    rejects("2_1", lambda new, old: [o - n for n, o in zip(new, old)], "sign is flipped")


def test_2_2():
    def right(g, deltas, counts, lr):
        return [w + lr * a for w, a in zip(g, fl.fedavg(deltas, counts))]

    assert check("2_2")(right)
    rejects("2_2", lambda g, d, c, lr: [w + lr * a for w, a in zip(g, fl.mean(d))],
            "unweighted mean", "n_k / n")
    rejects("2_2", lambda g, d, c, lr: fl.fedavg(d, c), "add it to the global weights")
    rejects("2_2", lambda g, d, c, lr: right(g, d, c, 1.0), "server_lr=0.5", "11.25")


def test_2_3():
    assert check("2_3")(lambda n, b, e: e * math.ceil(n / b))
    rejects("2_3", lambda n, b, e: e * (n // b), "last, smaller batch", "expected 32")
    rejects("2_3", lambda n, b, e: math.ceil(n / b), "multiply by epochs")


# ------------------------------------------------------------------ chapter 3
def test_3_1():
    def right(model):
        model.get_layer("backbone").trainable = False

    def everything(model):
        model.trainable = False

    def reversed_(model):
        model.get_layer("head").trainable = False

    def first_layer_only(model):
        model.get_layer("backbone").layers[0].trainable = False

    assert check("3_1")(right)
    rejects("3_1", everything, "froze the whole model")
    rejects("3_1", reversed_, "wrong way round")
    rejects("3_1", lambda m: None, "nothing was frozen")
    rejects("3_1", first_layer_only, "2 of the backbone's 4 tensors")


def test_3_1_accepts_the_helper_on_the_real_model():
    model = fl.build_model("builtin_cnn", None)
    fl.set_strategy(model, "builtin_cnn", "head")
    assert not model.get_layer("backbone").trainable_weights  # what the checker's stand-in checks


def test_3_2():
    assert check("3_2")(lambda s: math.ceil(s / 32))
    rejects("3_2", lambda s: s // 32, "rounds *up*", "expected 4")
    rejects("3_2", lambda s: s / 32, "a fraction")


def test_3_3():
    assert check("3_3")(lambda d, h, c: d * h + h + h * c + c)
    rejects("3_3", lambda d, h, c: d * h + h * c, "biases are missing")


# ------------------------------------------------------------------ chapter 4
def test_4_1():
    import keras

    def right(model):
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        return copy

    assert check("4_1")(right)
    rejects("4_1", keras.models.clone_model, "4 of 4 weight tensors differ", "set_weights")
    rejects("4_1", lambda m: m, "same model object")


def test_4_2():
    def right(history, target):
        return next((r["round"] for r in history.rows if r["test_accuracy"] >= target), None)

    assert check("4_2")(right)
    rejects("4_2", lambda h, t: next((r["round"] for r in h.rows if r["test_accuracy"] > t), None),
            "use >=, not >")
    rejects("4_2", lambda h, t: next((i for i, r in enumerate(h.rows) if r["test_accuracy"] >= t), None),
            "the row's position")
    rejects("4_2", lambda h, t: next((r["round"] for r in h.rows if r["test_accuracy"] >= t), -1),
            "return None")


# ------------------------------------------------------------------ chapter 5
def test_5_1():
    assert check("5_1")(lambda ws, mask: sum(w.nbytes for w, m in zip(ws, mask) if m))
    rejects("5_1", lambda ws, mask: sum(w.nbytes for w in ws), "frozen tensors never change", "360")
    rejects("5_1", lambda ws, mask: sum(w.size for w, m in zip(ws, mask) if m), "4 bytes")
    rejects("5_1", lambda ws, mask: 4 * sum(w.size for w, m in zip(ws, mask) if m), "float16", "nbytes")


def test_5_2():
    def right(blocks, k):
        order = [b for b in dict.fromkeys(blocks) if b != "head"]
        return [b == "head" or b in order[-k:] for b in blocks]

    def bottom(blocks, k):
        order = [b for b in dict.fromkeys(blocks) if b != "head"]
        return [b == "head" or b in order[:k] for b in blocks]

    assert check("5_2")(right)
    rejects("5_2", bottom, "*top* blocks")
    rejects("5_2", lambda blocks, k: [b == "block3" for b in blocks], "not the head")


def test_5_3():
    def right(a, b):
        x, y = (np.concatenate([t.ravel() for t in d]) for d in (a, b))
        return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))

    assert check("5_3")(right)
    rejects("5_3", lambda a, b: right(a[:1], b[:1]) if np.any(b[0]) else 0.0, "only the first tensor")
    rejects("5_3", lambda a, b: float(sum((x * y).sum() for x, y in zip(a, b))), "dot product")


def test_5_4_and_5_5_reject_the_mistakes_the_teachers_guide_lists():
    """The rows of book/teachers_guide.md for 5.4 and 5.5 (the right answers: tests/test_peft.py)."""
    rejects("5_4", lambda shape, r: int(np.prod(shape)), "full (or rank-times) kernel", "expected 1408")
    rejects("5_4", lambda shape, r: int(np.prod(shape[:-1])) * r * r * shape[-1], "multiplied", "add them")
    rejects("5_4", lambda shape, r: shape[-2] * r + r * shape[-1], "keeps the kernel's spatial size",
            "(3, 3, 32, 4)")

    def mean(xs, counts):
        return sum(c * x for c, x in zip(counts, xs)) / sum(counts)

    rejects("5_5", lambda a, b, c: mean(a, c) @ mean(b, c), "mean(A) @ mean(B)", "Multiply each client's")
    rejects("5_5", lambda a, b, c: sum(x @ y for x, y in zip(a, b)) / len(a), "unweighted mean",
            "counts[k] / sum(counts)")
    rejects("5_5", lambda a, b, c: mean([x.T @ y.T for x, y in zip(a, b)], c), "shape (2, 2)",
            "got shape (1, 1)")


# ------------------------------------------------------------------ chapter 6
def test_6_1():
    assert check("6_1")(fl.fedavg)
    rejects("6_1", lambda ws, n: fl.mean(ws), "unweighted mean", "num_examples")
    rejects("6_1", lambda ws, n: [sum(c * w[i] for c, w in zip(n, ws)) for i in range(len(ws[0]))],
            "weighted *sum*")

    def in_place(ws, n):
        for w, c in zip(ws, n):
            for t in w:
                t *= c / sum(n)
        return [sum(w[i] for w in ws) for i in range(len(ws[0]))]

    rejects("6_1", in_place, "in place")


def test_6_2():
    assert check("6_2")(lambda n, f, b: max(1, round(f * n)) * b)
    rejects("6_2", lambda n, f, b: n * b, "all 10 clients")
    rejects("6_2", lambda n, f, b: round(f * n) * b, "at least one client")


def test_6_3():
    assert check("6_3")(0.1)
    rejects("6_3", 10.0, "label skew of 10 clients is 0.12", "Smaller alpha")
    rejects("6_3", -1, "must be a number > 0")


# ------------------------------------------------------------------ chapter 7
def test_7_1():
    assert check("7_1")(lambda cm: np.diag(cm) / cm.sum(axis=1))
    rejects("7_1", lambda cm: np.diag(cm) / cm.sum(axis=0), "column sums", "precision")
    rejects("7_1", lambda cm: np.full(len(cm), np.trace(cm) / cm.sum()), "overall accuracy 0.775")


def test_7_2():
    assert check("7_2")(lambda acc, n: float(np.average(acc, weights=n)))
    rejects("7_2", lambda acc, n: float(np.mean(acc)), "mean over clients", "0.830")


# ------------------------------------------------------------------ chapter 13
def test_13_1():
    assert check("13_1")(lambda n, k: [np.arange(i, n, k) for i in range(k)])
    rejects("13_1", lambda n, k: np.array_split(np.arange(n), k), "contiguous blocks", "like cards")


def test_13_2():
    from fedtl_helpers.check.ch13 import exercise_13_2

    assert exercise_13_2(lambda h: sum(h.column("bytes_up")) / 1e6)
    rejects("13_2", lambda h: sum(h.column("bytes_up")) / 2**20, "mebibytes")
    rejects("13_2", lambda h: h.rows[-1]["bytes_up"] / 1e6, "last round only")


def test_13_3():
    right = dict(dataset="cifar10", n_train=None, n_test=None, backbone="resnet50", weights="imagenet",
                 input_size=96, partition="strided", num_clients=5, rounds=10, local_epochs=5)
    assert check("13_3")(right)
    rejects("13_3", {**right, "input_size": None}, "1x1 feature map", "input_size=96")
    rejects("13_3", {**right, "partition": "iid"}, "partition='iid'", "partition='strided'")
    rejects("13_3", {**right, "wieghts": "imagenet"}, "no field(s) ['wieghts']")
    rejects("13_3", {**right, "weights": "builtin"},
            "'builtin' weights exist only for backbone='builtin_cnn'")


# ------------------------------------------------------------------ chapter 14
GRID = """
name: strategies
notebook: notebooks/13_case_study.ipynb
fixed: {dataset: shapes, n_train: 1000, n_test: 500, rounds: 2}
grid:
  strategy: [head, partial, full]
  seed: [0, 1]
"""


def test_14_1(tmp_path, monkeypatch):
    assert check("14_1")(GRID)
    monkeypatch.chdir(tmp_path)  # a graded copy outside the repository (nbgrader's autograded/)
    assert check("14_1")(GRID)
    rejects("14_1", GRID.replace("seed: [0, 1]", "seed: [0]"), "expands to 3 run(s)")
    rejects("14_1", GRID.replace("strategy:", "stratgy:"), "unknown parameter 'stratgy'",
            "did you mean 'strategy'")
    rejects("14_1", GRID.replace("fixed: {", "fixed: {seed: [0, 1], ").replace("  seed: [0, 1]\n", ""),
            "put varied parameters under 'grid'")
    rejects("14_1", GRID.replace("dataset: shapes", "dataset: cifar10"), "use the embedded 'shapes'")
    rejects("14_1", "name: x\n  grid: [", "not valid YAML")


def test_14_2():
    def right(rows, key):
        groups = {}
        for r in rows:
            groups.setdefault(r[key], []).append(float(r["test_accuracy"]))
        return {k: float(np.mean(v)) for k, v in groups.items()}

    def best(rows, key):
        out = {}
        for r in rows:
            out[r[key]] = max(out.get(r[key], 0.0), float(r["test_accuracy"]))
        return out

    assert check("14_2")(right)
    rejects("14_2", best, "best run per setting")
    rejects("14_2", lambda rows, key: {r[key]: r["test_accuracy"] for r in rows}, "mean over seeds")
