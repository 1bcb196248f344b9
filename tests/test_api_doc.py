"""The API reference names only what the package has, and covers every module of every layer.

The book build runs with ``-W``: a name in an ``:members:`` list that a module no longer has
fails the whole build, 20 minutes into CI. This test finds it in a second.
"""

import importlib
import pkgutil
import re
from pathlib import Path

import fedtl_helpers

API = Path(__file__).resolve().parents[1] / "book" / "api.md"
BLOCK = re.compile(r"\.\. automodule:: (\S+)\n\s+:members: ([^\n]+)")
# Plumbing, not API a reader calls: the entry point, and the checkers (each chapter shows its own).
UNDOCUMENTED = {"fedtl_helpers.__main__", "fedtl_helpers.check"}


def _documented():
    return {m: [n.strip() for n in names.split(",")] for m, names in BLOCK.findall(API.read_text())}


def test_every_listed_member_exists():
    missing = [
        f"{module}.{name}"
        for module, names in _documented().items()
        for name in names
        if not hasattr(importlib.import_module(module), name)
    ]
    assert missing == []


def test_every_module_of_every_layer_is_documented_under_its_real_name():
    modules = {f"fedtl_helpers.{layer}.{m}" for layer, mods in fedtl_helpers.LAYERS.items() for m in mods}
    assert sorted(modules - set(_documented())) == []
    # nothing else sits at the top: every module lives in its layer's folder
    top = {f"fedtl_helpers.{i.name}" for i in pkgutil.iter_modules(fedtl_helpers.__path__)}
    assert top - UNDOCUMENTED == {f"fedtl_helpers.{layer}" for layer in fedtl_helpers.LAYERS}
    for layer, mods in fedtl_helpers.LAYERS.items():
        found = {i.name for i in pkgutil.iter_modules([str(Path(fedtl_helpers.__file__).parent / layer)])}
        assert found == set(mods), layer


def test_modules_import_by_their_real_path_only():
    """No import hook: ``fedtl_helpers.round`` is no module (an editor could not follow it);
    ``fl.round`` is the real module, an attribute of the package."""
    import sys

    import fedtl_helpers.federation.round as real

    assert fedtl_helpers.round is real and real.__name__ == "fedtl_helpers.federation.round"
    from fedtl_helpers import privacy

    assert privacy is importlib.import_module("fedtl_helpers.transforms.privacy")
    assert not any(type(f).__module__.startswith("fedtl_helpers") for f in sys.meta_path)
    try:
        importlib.import_module("fedtl_helpers.round")
    except ModuleNotFoundError:
        pass
    else:
        raise AssertionError("the flat name fedtl_helpers.round imported")


def test_no_code_imports_a_flat_name():
    """Tests, benchmarks, the deployment, scripts and notebooks import the real paths."""
    root = Path(__file__).resolve().parents[1]
    mods = "|".join(m for ms in fedtl_helpers.LAYERS.values() for m in ms)
    flat = re.compile(rf"(?:from|import)\s+fedtl_helpers\.(?:{mods})\b")
    files = [p for d in ("tests", "benchmarks", "deploy", "scripts", "fedtl_helpers", "notebooks")
             for p in (root / d).rglob("*") if p.suffix in (".py", ".ipynb")]
    assert sorted(str(p.relative_to(root)) for p in files if flat.search(p.read_text())) == []


def test_each_layer_imports_only_the_layers_above_it():
    """core <- inputs, modeling, transforms <- federation <- workflow, teaching (README's table)."""
    order = list(fedtl_helpers.LAYERS)
    root = Path(fedtl_helpers.__file__).parent
    wrong = []
    for layer, mods in fedtl_helpers.LAYERS.items():
        for m in mods:
            text = (root / layer / f"{m}.py").read_text()
            for target in re.findall(r"^\s*from \.\.(\w+)", text, re.M):
                if target in order and order.index(target) > order.index(layer):
                    wrong.append(f"{layer}/{m}.py imports {target}")
    assert wrong == []
