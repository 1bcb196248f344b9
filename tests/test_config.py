import pytest

from fedtl_helpers.core.config import ExperimentConfig, comparable


def test_defaults_are_valid_and_roundtrip():
    cfg = ExperimentConfig()
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.clients_per_round == 5
    assert "shapes" in cfg.describe() and "builtin" in cfg.describe()


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("num_clients", 0, ">= 1"),
        ("num_clients", 2.5, ">= 1"),
        ("client_fraction", 0.0, r"\(0, 1\]"),
        ("client_fraction", 1.5, r"\(0, 1\]"),
        ("rounds", -1, ">= 0"),
        ("partition", "random", "'iid'"),
        ("dataset", "mnist", "'shapes'"),
        ("local_epochs", 0, ">= 1"),
        ("batch_size", 0, ">= 1"),
        ("learning_rate", 0, "> 0"),
        ("server_lr", -1.0, "> 0"),
        ("client_optimizer", "rmsprop", "'adam', 'sgd', 'sgd_momentum'"),
        ("backbone", "vgg16", "'builtin_cnn'"),
        ("strategy", "all", "'head'"),
        ("weights", "imagenet", "'builtin'"),  # imagenet does not exist for builtin_cnn
        ("weights", "model.h5", ".weights.h5"),
        ("input_size", 16, ">= 32"),
        ("seed", -3, ">= 0"),
        ("unfreeze_blocks", 0, ">= 1"),
        ("partial_lr_scale", 2.0, r"\(0, 1\]"),
        ("n_train", 0, ">= 1"),
        ("feature_cache", "yes", "True or False"),
    ],
)
def test_bad_values_name_field_value_and_allowed(field, value, allowed):
    with pytest.raises(ValueError, match=rf"ExperimentConfig\.{field}=.*allowed.*{allowed}"):
        ExperimentConfig(**{field: value})


def test_dirichlet_needs_positive_alpha():
    with pytest.raises(ValueError, match="alpha=None"):
        ExperimentConfig(partition="dirichlet")
    with pytest.raises(ValueError, match="alpha=0"):
        ExperimentConfig(partition="dirichlet", alpha=0)
    with pytest.raises(ValueError, match="alpha=0.5.*only.*dirichlet|alpha=0.5.*None unless"):
        ExperimentConfig(partition="iid", alpha=0.5)
    assert ExperimentConfig(partition="dirichlet", alpha=0.1).alpha == 0.1


def test_builtin_weights_only_for_builtin_backbone():
    with pytest.raises(ValueError, match="weights='builtin'"):
        ExperimentConfig(backbone="resnet50", weights="builtin")
    assert ExperimentConfig(backbone="resnet50", weights="imagenet", input_size=96).input_size == 96


def test_more_clients_than_examples_rejected():
    with pytest.raises(ValueError, match="num_clients=11"):
        ExperimentConfig(num_clients=11, n_train=10)


def test_from_dict_rejects_unknown_keys_by_name():
    with pytest.raises(ValueError, match="rounds_"):
        ExperimentConfig.from_dict({"rounds_": 3})


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        ExperimentConfig().rounds = 3  # type: ignore[misc]


def test_config_choices_mirror_the_modules():
    """config.py lists names without importing TensorFlow; they must match the real ones."""
    from fedtl_helpers.core import config
    from fedtl_helpers.inputs import data, partitioning
    assert config.DATASET_NAMES == data.DATASETS
    assert config.PARTITION_SCHEMES == partitioning.SCHEMES


# ------------------------------------------------------------------ privacy and secure aggregation
def test_randomness_mode_is_a_named_field_and_roundtrips():
    cfg = ExperimentConfig(randomness="secure")
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg and ExperimentConfig().randomness == "simulation"
    with pytest.raises(ValueError, match=r"ExperimentConfig\.randomness='seeded' is invalid: allowed one of "
                                         r"'simulation', 'secure'"):
        ExperimentConfig(randomness="seeded")


def test_dp_delta_must_be_below_one_over_the_number_of_clients_only_when_dp_is_on():
    with pytest.raises(ValueError, match=r"ExperimentConfig\.dp_delta=0\.5 .*below 1 / num_clients = 0\.2"):
        ExperimentConfig(dp_clip=1.0, aggregator="mean", dp_delta=0.5)
    assert ExperimentConfig(dp_clip=1.0, aggregator="mean", dp_delta=0.19).dp_delta == 0.19
    assert ExperimentConfig(dp_delta=0.5).dp_delta == 0.5  # no DP: delta is not used


@pytest.mark.parametrize("kwargs, field, allowed", [
    (dict(num_clients=10, secagg_threshold=2), "secagg_threshold", "a majority, > 10 / 2, i.e. in [6, 10]"),
    (dict(num_clients=10, secagg_threshold=5), "secagg_threshold", "in [6, 10]"),
    (dict(num_clients=4, secagg_threshold=2), "secagg_threshold", "in [3, 4]"),
    (dict(num_clients=10, client_fraction=0.5, client_sampling="poisson"), "client_sampling",
     "'fixed' with secure_aggregation=True"),
])
def test_secure_aggregation_needs_a_majority_threshold_and_fixed_sampling(kwargs, field, allowed):
    with pytest.raises(ValueError, match=rf"ExperimentConfig\.{field}=") as err:
        ExperimentConfig(secure_aggregation=True, **kwargs)
    assert allowed in str(err.value)
    assert ExperimentConfig(secure_aggregation=True, num_clients=10, secagg_threshold=6).secagg_threshold == 6


@pytest.mark.parametrize("field, value, extra", [
    ("learning_rate", float("inf"), {}),
    ("learning_rate", float("nan"), {}),
    ("server_lr", float("inf"), {}),
    ("alpha", float("inf"), {"partition": "dirichlet"}),
    ("quantity_alpha", float("inf"), {}),
    ("server_tau", float("nan"), {}),
    ("attack_scale", float("inf"), {"attack": "scale", "malicious_fraction": 0.2}),
    ("client_fraction", float("nan"), {}),
    ("holdout_fraction", float("nan"), {}),
])
def test_non_finite_values_are_rejected(field, value, extra):
    with pytest.raises(ValueError, match=rf"ExperimentConfig\.{field}={value!r} is invalid"):
        ExperimentConfig(**{**extra, field: value})


def test_an_older_config_dict_with_error_feedback_true_still_loads_and_compares_equal():
    """Before ``error_feedback=None`` was the default, every saved config said True."""
    old = {**ExperimentConfig(compression="quantize").to_dict(), "error_feedback": True}
    cfg = ExperimentConfig.from_dict(old)  # ignored with quantisation then: loads as None
    assert cfg.error_feedback is None and not cfg.uses_error_feedback
    assert comparable(old) == comparable(cfg.to_dict())
    assert comparable(old)["error_feedback"] is False  # what ran
    top = {**ExperimentConfig(compression="topk").to_dict(), "error_feedback": True}
    assert ExperimentConfig.from_dict(top).error_feedback is True  # explicit and meaningful: kept
    assert comparable(top) == comparable(ExperimentConfig(compression="topk").to_dict())
    off = ExperimentConfig(compression="topk", error_feedback=False).to_dict()
    assert comparable(off) != comparable(top)
    assert ExperimentConfig.from_dict(ExperimentConfig().to_dict()).error_feedback is None


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "sgd_momentum"])
def test_every_client_optimizer_is_accepted_and_roundtrips(optimizer):
    cfg = ExperimentConfig(client_optimizer=optimizer)
    assert ExperimentConfig.from_dict(cfg.to_dict()).client_optimizer == optimizer
    assert ExperimentConfig().client_optimizer == "adam"  # chosen by benchmarks/bench_optimizer.py
