"""The API page shows a shared parameter paragraph once, not once per parameter name."""

import inspect
from pathlib import Path

import yaml
from sphinx.ext.napoleon import Config, NumpyDocstring

from fedtl_helpers.core.config import ExperimentConfig

ROOT = Path(__file__).resolve().parents[1]


def _rendered(use_param: bool) -> str:
    config = Config(napoleon_use_param=use_param, napoleon_numpy_docstring=True)
    return str(NumpyDocstring(inspect.cleandoc(ExperimentConfig.__doc__), config, what="class"))


def test_book_config_keeps_grouped_parameters_together():
    sphinx_config = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]
    assert sphinx_config["napoleon_use_param"] is False


def test_shared_paragraphs_appear_once():
    marker_compression = "How each client encodes its update for the uplink"
    marker_dp = "Client-level differential privacy (DP-FedAvg"
    page = _rendered(use_param=False)
    assert page.count(marker_compression) == 1 and page.count(marker_dp) == 1
    # what the page showed before: the paragraph repeated for each name of the group
    assert _rendered(use_param=True).count(marker_compression) == 6
