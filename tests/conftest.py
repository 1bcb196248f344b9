"""Shared fixtures, and how the suite runs the notebooks (nbval) exactly once.

``python -m pytest`` collects ``tests/`` and ``notebooks/`` (``testpaths``); nbval (``--nbval-lax``
in ``addopts``) executes every chapter and solution notebook top to bottom with its defaults and
compares the output of the *reference cells* only (tag ``nbval-check-output``, metadata
``keep_output``; see ``is_reference``). The plugin below then

- marks every notebook cell ``slow`` and ``nbval`` (``python3 dev.py test --quick`` = ``-m "not slow"``),
- runs the notebooks first and ``tests/test_book.py`` last,
- gives reference cells back the execution count that nbstripout removes in git (nbval treats a
  cell without one as never run and refuses its stored output),
- stores each notebook that ran through without a failure in the book's execution cache
  (``_build/.jupyter_cache``, the same jupyter-cache call myst-nb makes), so the book build in
  ``tests/test_book.py`` finds every notebook there and executes none again,
- under pytest-xdist (``python3 dev.py test`` runs two workers, ``--dist loadfile``: a notebook's
  cells stay on one worker, in order), drops a stale cache once in the controller and gathers
  the workers' seconds per notebook for the summary,
- with ``--write-references``, writes the fresh outputs of the reference cells back into the
  notebook files (how a reference cell gets, or updates, its stored output).
"""

import copy
import os
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CACHE = ROOT / "_build" / ".jupyter_cache"
SANITIZE = Path(__file__).resolve().parent / "nbval_sanitize.cfg"
REFERENCE_TAG = "nbval-check-output"
# The first code cell of every notebook: a downloaded notebook says how to get the helpers. Its
# text comes from dev.py (one template), naming the course address set in _config.yml.
sys.path.insert(0, str(ROOT))
from dev import INSTALL_CHECK_TAG, course_url, install_check  # noqa: E402, F401 (re-exported)

INSTALL_CHECK = install_check(course_url(ROOT))
collect_ignore_glob = ["data/*.ipynb"]  # inputs of test_experiments.py, not notebooks of the book

# Tests that train for long or start processes (over ~10 s each under load on 2 cores, measured
# with --durations): marked `slow` here, in one place, so `python3 dev.py test --quick` skips them
# (tests/test_nbval.py checks that every name still exists). "*" marks the whole module.
SLOW = {
    "test_batchnorm.py": [
        "test_random_init_is_evaluated_with_statistics_that_describe_its_weights",
    ],
    "test_book.py": ["*"],  # builds the book
    "test_book_access.py": [  # each builds a two-page book
        "test_a_published_book_links_the_repository_its_issues_and_launches_the_notebooks",
        "test_an_unpublished_book_shows_no_repository_issue_or_launch_link",
    ],
    "test_cli.py": [
        "test_cli_run_writes_history_and_prints_json",
        "test_diverged_round_stops_with_exit_1_and_keeps_the_last_good_checkpoint",
        "test_ctrl_c_says_what_was_kept_and_how_to_resume",
    ],
    "test_conformance.py": ["*"],  # every feature through the deployment's code and FedPer
    "test_deploy.py": [
        "test_deployment_runs_the_simulations_stages_end_to_end",
        "test_sigkill_of_the_real_launcher_stops_the_flower_processes",
        "test_deployment_matches_simulation",
        "test_a_run_that_fails_after_it_started_is_an_error",
        "test_ctrl_c_stops_every_process",
        "test_supernode_that_cannot_reach_the_superlink_stops_cleanly",
    ],
    "test_lab.py": [
        "test_a_notebook_runs_on_the_kernel_by_name",
    ],
    "test_model_compression.py": [
        "test_fine_tuning_keeps_pruned_weights_at_zero",
        "test_int8_tflite_is_3_5x_smaller_and_agrees_with_keras",
    ],
    "test_notebooks.py": [
        "test_case_study_runs_on_cifar10_in_the_real_format_and_resumes",
    ],
    "test_personalization.py": [
        "test_personalisation_beats_the_global_model_under_label_skew",
    ],
    "test_pretrain.py": [
        "test_same_seed_same_file_and_record",
    ],
    "test_privacy.py": [
        "test_noise_subtraction_from_a_run_and_its_history_works_only_on_seeded_noise",
        "test_secure_mode_runs_are_not_reproducible",
        "test_dp_run_survives_an_empty_round_and_noise_moves_the_model",
        "test_inverse_finds_a_multiplier_that_achieves_the_target",
        "test_dp_run_records_epsilon_and_resumes_bit_identically",
    ],
    "test_results.py": [
        "test_the_start_of_every_record_reproduces",
    ],
    "test_robust.py": [
        "test_end_to_end_attack_breaks_fedavg_and_median_holds",
        "test_secure_aggregation_in_the_server_loop_equals_fedavg_up_to_quantisation",
    ],
    "test_server.py": [
        "test_federated_run_learns_above_chance",
        "test_resume_gives_same_final_weights",
        "test_resume_rejects_other_config",
        "test_feature_cache_matches_uncached",
        "test_pretrained_beats_random_after_round_one",
        "test_memory_objects_do_not_grow_with_clients",
        "test_per_client_accuracy_on_holdout",
        "test_unweighted_mean_aggregator_differs",
        "test_crash_mid_run_then_resume_matches_uninterrupted",
    ],
    "test_server_opt.py": [
        "test_resume_is_bit_identical_with_stateful_server_optimisers",
    ],
    "test_uplink.py": [
        "test_history_counts_the_encoded_bytes",
        "test_topk_with_error_feedback_uses_50x_fewer_bytes_and_still_learns",
        "test_error_feedback_residuals_survive_checkpoint_and_resume",
        "test_stochastic_quantisation_resumes_identically",
    ],
}


def is_slow(item) -> bool:
    names = SLOW.get(Path(str(item.path)).name, [])
    return "*" in names or getattr(item, "originalname", item.name) in names


def is_reference(cell) -> bool:
    """A code cell whose committed output nbval compares (and nbstripout keeps)."""
    meta = cell.get("metadata", {})
    return (REFERENCE_TAG in meta.get("tags", []) or bool(meta.get("keep_output"))
            or "NBVAL_CHECK_OUTPUT" in cell.get("source", ""))


def pytest_addoption(parser):
    parser.addoption("--write-references", action="store_true",
                     help="write the fresh outputs of the nbval reference cells back into the notebooks")
    parser.addoption("--notebooks-cached", action="store_true",
                     help="an earlier pytest run (nbval) executed every notebook: the book build must "
                          "execute none (python3 dev.py test's second step)")


def pytest_configure(config):
    config.addinivalue_line("markers", "nbval: a notebook cell executed and checked by nbval")
    if getattr(config.option, "nbval_sanitize_with", "unset") is None:
        # An absolute path, so the sanitisers apply wherever pytest is started from.
        config.option.nbval_sanitize_with = str(SANITIZE)
    config.pluginmanager.register(NotebookRuns(config.getoption("--write-references")), "fedtl-nbval")


@pytest.fixture(scope="session")
def small_shapes():
    """A small slice of the embedded dataset, shared by the training tests."""
    from fedtl_helpers.inputs.data import load_dataset

    return load_dataset("shapes", n_train=1_500, n_test=600, seed=0)


def _is_cell(item) -> bool:
    return type(item).__name__ == "IPyNbCell"


class NotebookRuns:
    """Registered globally (not as a conftest), because the cells live under ``notebooks/``."""

    def __init__(self, write_references: bool):
        self.write_references = write_references
        self.failed: set = set()
        self.started: dict = {}
        self.seconds: dict = {}  # notebook -> seconds nbval took, printed at the end

    @pytest.hookimpl(tryfirst=True)  # mark before `-m "not slow"` deselects
    def pytest_collection_modifyitems(self, items):
        for item in items:
            if is_slow(item):
                item.add_marker(pytest.mark.slow)
            if _is_cell(item):
                item.add_marker(pytest.mark.slow)
                item.add_marker(pytest.mark.nbval)
                if item.cell.outputs and item.cell.execution_count is None:
                    item.cell.execution_count = item.cell_num + 1  # stripped in git, see the docstring
        # Notebooks first (they fill the execution cache), the book build (which reads it) last.
        items.sort(key=lambda i: 0 if _is_cell(i) else 2 if Path(str(i.path)).name == "test_book.py" else 1)

    def pytest_sessionstart(self, session):
        if _xdist_role(session.config) == "controller":  # its workers collect; it runs nothing
            _drop_stale_execution_cache()

    def pytest_collection_finish(self, session):
        if _xdist_role(session.config) == "worker":  # the controller did it before they started
            return
        if any(_is_cell(i) and Path(str(i.path)).is_relative_to(NOTEBOOKS) for i in session.items):
            _drop_stale_execution_cache()

    def pytest_runtest_setup(self, item):
        if _is_cell(item):
            self.started.setdefault(item.parent, time.perf_counter())

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        if _is_cell(item) and outcome.get_result().failed:
            self.failed.add(item.parent)

    def pytest_runtest_teardown(self, item, nextitem):
        if not _is_cell(item) or (nextitem is not None and nextitem.parent is item.parent):
            return
        cells = [c for c in item.parent.session.items if _is_cell(c) and c.parent is item.parent]
        every = sum(c.cell_type == "code" for c in item.parent.nb.cells)
        if item.parent in self.failed or len(cells) != every or any(c.test_outputs is None for c in cells):
            return  # a failed or partial run (-k, -x) is not an executed notebook
        path = Path(str(item.parent.path))
        self.seconds[path] = time.perf_counter() - self.started[item.parent]
        if self.write_references:
            _write_references(path, cells)
        if path.is_relative_to(NOTEBOOKS):
            _cache_executed(path, cells, self.seconds[path])

    def pytest_sessionfinish(self, session):
        if _xdist_role(session.config) == "worker":  # sent to the controller (pytest_testnodedown)
            session.config.workeroutput["nbval_seconds"] = {str(p): s for p, s in self.seconds.items()}

    @pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, called in the controller
    def pytest_testnodedown(self, node, error):
        sent = getattr(node, "workeroutput", {}).get("nbval_seconds", {})
        self.seconds.update({Path(p): s for p, s in sent.items()})

    def pytest_terminal_summary(self, terminalreporter):
        if self.seconds:
            terminalreporter.write_sep("-", "seconds per notebook (nbval; the book build reuses these runs)")
            for path, seconds in sorted(self.seconds.items(), key=lambda kv: -kv[1]):
                terminalreporter.write_line(f"{seconds:7.1f}  {os.path.relpath(path, ROOT)}")


def _xdist_role(config) -> str:
    """``"worker"`` or ``"controller"`` under pytest-xdist (``-n 2``), else ``"alone"``."""
    if hasattr(config, "workerinput"):
        return "worker"
    return "controller" if getattr(config.option, "numprocesses", None) else "alone"


def _drop_stale_execution_cache() -> None:
    """Forget outputs of older helper code *before* the notebooks write new ones into the cache."""
    import sys

    sys.path.insert(0, str(ROOT))
    import dev  # noqa: PLC0415  (the project's task file)

    dev.drop_stale_execution_cache()


def _executed(cells):
    nb = copy.deepcopy(cells[0].parent.nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for n, (cell, item) in enumerate(zip(code, cells), start=1):
        cell.outputs, cell.execution_count = copy.deepcopy(item.test_outputs), n
    return nb


def _cache_executed(path: Path, cells, seconds: float) -> None:
    """Store the notebook as nbval executed it, keyed as myst-nb keys it (its code and kernel)."""
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    bundle = CacheBundleIn(_executed(cells), str(path), data={"execution_seconds": seconds})
    get_cache(str(CACHE)).cache_notebook_bundle(bundle, check_validity=False, overwrite=True)


def _write_references(path: Path, cells) -> None:
    """Put the fresh outputs of the reference cells into the file, as nbstripout leaves them."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not any(map(is_reference, code)):
        return
    for cell, item in zip(code, cells):
        if is_reference(cell):
            cell.outputs = copy.deepcopy(item.test_outputs)
            for out in cell.outputs:
                if "execution_count" in out:
                    out.execution_count = None
        cell.execution_count = None
    nbformat.write(nb, path)
