"""Checkers for chapter 14, "Running experiments": a grid file, a summary by setting.

Chapter: "Running experiments" (exercises 14.1 and 14.2).
"""

from __future__ import annotations

import itertools

import numpy as np

from ._common import Verdict, attempt, checker, fail, passed, show

CASE_STUDY = "notebooks/13_case_study.ipynb"


@checker("14.1", "Write my_grid, a YAML grid for the case study.")
def exercise_14_1(my_grid) -> Verdict:
    """``my_grid`` (YAML text): the case study on shapes, strategies head/partial/full x seeds 0 and 1."""
    import yaml

    from ..teaching.notebook import repo_root
    from ..workflow import experiments

    if not isinstance(my_grid, str):
        fail("14.1", f"my_grid should be the YAML text (a string), got {type(my_grid).__name__}.")
    try:
        spec = yaml.safe_load(my_grid)
    except yaml.YAMLError as e:
        fail("14.1", f"this is not valid YAML ({str(e).splitlines()[0]}): check the indentation and that "
                     "lists are written [a, b].")
    if not isinstance(spec, dict):
        fail("14.1", f"the YAML should be a mapping with keys name, notebook, fixed, grid; got {spec!r}.")
    unknown = sorted(set(spec) - experiments.ALLOWED_KEYS)
    if unknown:
        fail("14.1", f"unknown top-level key(s) {unknown}; allowed: {sorted(experiments.ALLOWED_KEYS)}.")
    if spec.get("notebook") != CASE_STUDY:
        fail("14.1", f"notebook={spec.get('notebook')!r}: the grid should run {CASE_STUDY!r} (relative to "
                     "the repository root).")
    try:
        runs = experiments.expand(spec)
        experiments.GridSpec(spec.get("name"), repo_root() / CASE_STUDY, runs)
        experiments.check_parameters(repo_root() / CASE_STUDY, runs)
    except ValueError as e:
        hint = (" A list under 'fixed' is one value (a list), not several runs: put varied parameters "
                "under 'grid'." if "should be" in str(e) and "[" in str(e) else "")
        fail("14.1", f"the runner would refuse this grid: {e}.{hint}")
    want = set(itertools.product(("head", "partial", "full"), (0, 1)))
    have = [(r.get("strategy"), r.get("seed")) for r in runs]
    if set(have) != want or len(have) != 6:
        fail("14.1", f"the grid expands to {len(have)} run(s) with (strategy, seed) = {have}; expected the "
                     "6 combinations of strategy head/partial/full and seed 0/1. Under 'grid', every key "
                     "lists its values and the runner takes all combinations.")
    not_shapes = [r for r in runs if r.get("dataset", "shapes") != "shapes"]
    if not_shapes:
        fail("14.1", f"{len(not_shapes)} run(s) use dataset={not_shapes[0].get('dataset')!r}; use the "
                     f"embedded 'shapes' (fixed: {{dataset: shapes}}) so the grid runs anywhere.")
    return passed("14.1", "6 runs (3 strategies x 2 seeds), every name and type accepted by the case "
                          "study's parameters cell; run it with python -m fedtl_helpers experiments run "
                          "<file>.")


ROWS = [{"run_id": "a", "strategy": "head", "seed": "0", "test_accuracy": "0.80"},
        {"run_id": "b", "strategy": "head", "seed": "1", "test_accuracy": "0.84"},
        {"run_id": "c", "strategy": "full", "seed": "0", "test_accuracy": "0.9"},
        {"run_id": "d", "strategy": "full", "seed": "1", "test_accuracy": "0.70"}]


@checker("14.2", "Write mean_by(rows, key).")
def exercise_14_2(mean_by) -> Verdict:
    """``mean_by(rows, key)``: mean test accuracy per value of ``key`` over summary.csv rows (strings)."""
    got = attempt("14.2", mean_by, [dict(r) for r in ROWS], "strategy",
                  what="4 summary.csv rows (values are strings, as csv.DictReader returns them)")
    expect = {"head": 0.82, "full": 0.80}
    if not isinstance(got, dict):
        fail("14.2", f"expected a dict {{value of key: mean accuracy}}, got {type(got).__name__}.")
    if set(got) != set(expect):
        fail("14.2", f"the keys are {sorted(map(str, got))}, expected {sorted(expect)}: one entry per "
                     "value of the column named by key.")
    try:
        vals = {k: float(v) for k, v in got.items()}
    except (TypeError, ValueError):
        fail("14.2", f"the means should be numbers, got {show(got)}: csv gives strings, convert with "
                     "float().")
    if np.isclose(vals["full"], 0.9) or np.isclose(vals["head"], 0.84):
        fail("14.2", f"you returned {vals}: that looks like the best run per setting; the exercise asks "
                     "for the mean over seeds (head 0.82, full 0.80).")
    if not all(np.isclose(vals[k], v) for k, v in expect.items()):
        fail("14.2", f"you returned {vals}, expected {expect} (mean of float(test_accuracy) per strategy).")
    return passed("14.2", "head 0.82, full 0.80 averaged over two seeds: the best single run (full, 0.90) "
                          "would have pointed the other way.")
