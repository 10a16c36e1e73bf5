"""The run configuration: typed, range-checked fields, one config class per model kind, overrides,
old config files, and the registry that maps a kind to its classes."""

from __future__ import annotations

import typing

import pytest
import torch
import yaml

import flowvae
from flowvae.config import (
    Config,
    apply_overrides,
    config_from_dict,
    load_config,
    migrate,
    save_config,
)
from flowvae.errors import ConfigError
from flowvae.models import MODEL_KINDS, BTCVAEConfig, FlowVAEConfig, MultiStageConfig, UGVAEConfig, config_class
from flowvae.presets import PRESETS, get_preset


@pytest.mark.parametrize("override,message", [
    ("train.grad_clip=abc", "train.grad_clip must be float or null"),
    ("train.num_threads=2.5", "train.num_threads must be int or null"),
    ("data.root=123", "data.root must be str or null"),
    ('model.steps=[1,"a"]', "model.steps must be list of"),
    ("train.lr=-1", "train.lr must be greater than 0"),
    ("train.lr=.inf", "train.lr must be a finite number"),
    ("train.eps=0", "train.eps must be greater than 0"),
    ("train.betas=[0.9]", "train.betas must be two numbers"),
    ("train.eval_every=0", "train.eval_every must be at least 1"),
    ("train.checkpoint_every=0", "train.checkpoint_every must be at least 1"),
    ("train.eval_k=0", "train.eval_k must be at least 1"),
    ("train.batch_size=0", "train.batch_size must be at least 1"),
    ("train.batch_size=-4", "train.batch_size must be at least 1"),
    ("train.steps=-1", "train.steps must be at least 0"),
    ("train.init_batch_size=0", "train.init_batch_size must be at least 1"),
    ("train.sample_temperatures=[.nan]", "train.sample_temperatures must be a finite number"),
    ("train.device=tpu", "train.device must be auto, cpu, cuda or cuda:N"),
    ("train.precision=fp16", "train.precision must be 'auto' | 'fp32' | 'bf16'"),
    ("data.on_bad=maybe", "data.on_bad must be 'error' | 'skip'"),
    ("data.crop_pad=-1", "data.crop_pad must be at least 0"),
    ("data.n_bits=9", "data.n_bits must be at most 8"),
    ("model.d_z=-2", "model.d_z must be at least 1"),
    ("model.factor_out=0", "model.factor_out must be at least 2"),
    ("model.hidden=[8,200000,64]", "model.hidden must be at most 8192"),
    ("model.coupling=spline", "model.coupling must be 'affine' | 'additive'"),
    ("model.steps=[0,[2,2]]", "model.hidden needs one width per level"),
    ("model.kind=gan", "unknown model.kind 'gan'"),
])
def test_bad_values_are_refused_where_they_are_set(override, message):
    with pytest.raises(ConfigError) as e:
        apply_overrides(get_preset("digits"), [override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_integers_become_floats_and_yaml_exponents_are_numbers():
    cfg = apply_overrides(get_preset("digits"), ["train.lr=1", "train.grad_clip=2e-3", "train.time_limit_s=60"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.train.grad_clip == 2e-3 and cfg.train.time_limit_s == 60.0


def test_steps_and_hidden_change_together():
    cfg = apply_overrides(get_preset("digits"), ["model.steps=[0,[1,1]]", "model.hidden=[4,8]"])
    assert cfg.model.steps == [0, [1, 1]] and cfg.model.hidden == [4, 8]


def test_each_kind_owns_its_fields_and_old_names_say_where_they_went():
    btc = get_preset("dsprites-btcvae")
    assert isinstance(btc.model, BTCVAEConfig) and btc.model.n_factors == 10
    with pytest.raises(ConfigError, match="it is model.n_factors now"):
        apply_overrides(btc, ["model.d_z=4"])
    with pytest.raises(ConfigError, match="use model.n_components"):
        apply_overrides(get_preset("mnist"), ["ugvae.K=5"])
    with pytest.raises(ConfigError, match="use model.stage1_run"):
        apply_overrides(get_preset("dsprites-multistage"), ["multistage.stage1=somewhere"])
    with pytest.raises(ConfigError, match="did you mean 'model.d_z'"):
        apply_overrides(get_preset("digits"), ["model.dz=3"])


def test_switching_kind_keeps_the_shared_fields_only():
    cfg = apply_overrides(get_preset("mnist"), ["model.kind=ugvae", "model.group_by=label", "model.d_local=8"])
    assert isinstance(cfg.model, UGVAEConfig)
    assert (cfg.model.in_channels, cfg.model.image_size, cfg.model.d_local) == (1, 28, 8)
    assert cfg.model.hidden == UGVAEConfig().hidden  # the flow's per-level widths mean something else here
    glow = apply_overrides(get_preset("mnist"), ["model.kind=refined_glow"])
    assert isinstance(glow.model, FlowVAEConfig) and glow.model.steps == get_preset("mnist").model.steps
    ms = apply_overrides(get_preset("mnist"), ["model.kind=multistage"])
    assert isinstance(ms.model, MultiStageConfig) and ms.model.hidden == get_preset("mnist").model.hidden


def test_nested_settings_are_overridden_with_more_dots():
    cfg = apply_overrides(get_preset("dsprites-multistage"), ["model.stage1.beta=4", "model.stage1.hidden=32"])
    assert cfg.model.stage1.beta == 4.0 and cfg.model.stage1.hidden == 32
    with pytest.raises(ConfigError, match="model.stage1.betta"):
        apply_overrides(cfg, ["model.stage1.betta=4"])


def test_build_model_takes_a_preset_or_a_model_config():
    """``flowvae.build_model(flowvae.get_preset("digits"))`` used to raise AttributeError."""
    model = flowvae.build_model(flowvae.get_preset("digits"))
    assert model.kind == "flowvae" and model.n_bits == 8
    assert flowvae.build_model(flowvae.get_preset("digits").model).dim == 64
    with pytest.raises(ConfigError, match="needs a flowvae Config"):
        flowvae.build_model({"kind": "flowvae"})


def test_every_registered_kind_has_a_config_class_that_names_it():
    assert {"flowvae", "z_prior", "refined_glow", "glow", "ugvae", "btcvae", "multistage"} <= set(MODEL_KINDS)
    for kind, cls in MODEL_KINDS.items():
        assert config_class(kind) is cls.config_class
        assert kind in typing.get_args(typing.get_type_hints(cls.config_class)["kind"])
        cfg = cls.config_class(kind=kind)
        assert config_class(cfg.kind) is cls.config_class


def test_every_preset_builds_and_round_trips_through_yaml(tmp_path):
    for name in PRESETS:
        cfg = get_preset(name)
        with torch.device("meta"):
            model = flowvae.build_model(cfg)
        assert model.kind == cfg.model.kind
        save_config(cfg, tmp_path / f"{name}.yaml")
        assert load_config(tmp_path / f"{name}.yaml") == cfg


def test_config_files_of_earlier_releases_are_converted():
    old_ugvae = {"name": "old", "model": {"kind": "ugvae", "in_channels": 1, "image_size": 8, "d_z": 4, "steps": [1]},
                 "data": {"dataset": "digits"}, "train": {"steps": 5},
                 "ugvae": {"d_beta": 3, "K": 2, "hidden": [16], "group_by": "label"},
                 "btcvae": {"beta": 6.0}, "multistage": {"stage1": None}}
    cfg = config_from_dict(old_ugvae)
    assert isinstance(cfg.model, UGVAEConfig)
    assert (cfg.model.d_local, cfg.model.d_global, cfg.model.n_components, cfg.model.group_by) == (4, 3, 2, "label")
    old_ms = {"model": {"kind": "multistage", "in_channels": 1, "image_size": 64, "d_z": 10, "steps": [0, [2, 2], 2],
                        "hidden": [8, 64, 64], "encoder_widths": [8]},
              "btcvae": {"beta": 4.0, "dataset_size": 100}, "multistage": {"stage1": "runs/s1", "recon_input": True}}
    ms = config_from_dict(old_ms)
    assert isinstance(ms.model, MultiStageConfig) and ms.model.stage1_run == "runs/s1" and ms.model.recon_input
    assert (ms.model.stage1.n_factors, ms.model.stage1.beta, ms.model.stage1.dataset_size) == (10, 4.0, 100)
    flow = migrate({"model": {"kind": "flowvae", "d_z": 8}, "ugvae": {}, "btcvae": {}, "multistage": {}})
    assert flow == {"model": {"kind": "flowvae", "d_z": 8}}
    with pytest.raises(ConfigError, match="unknown config section 'ugvea'"):
        config_from_dict({"ugvea": {}})


def test_unreadable_config_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "config.yaml"
    bad.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(bad)
    bad.write_text("model: [1, 2")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(bad)
    bad.write_text(yaml.safe_dump({"model": {"kind": "flowvae", "hidden": [8, 200000, 64], "steps": [1, 1, 1]}}))
    with pytest.raises(ConfigError, match="model.hidden must be at most"):
        load_config(bad)  # refused before anything is allocated
    big = tmp_path / "big.yaml"
    big.write_text("name: x\n" + "#" * (2 << 20))
    with pytest.raises(ConfigError, match="larger than"):
        load_config(big)


def test_config_is_a_plain_dataclass_with_typed_sections():
    cfg = Config()
    assert cfg.to_dict()["model"]["kind"] == "flowvae"
    assert config_from_dict(cfg.to_dict()) == cfg


def test_names_that_moved_to_presets_are_deprecated_aliases():
    import flowvae.config
    import flowvae.presets

    for name in ("PRESETS", "get_preset", "preset_for_images", "resolve"):
        with pytest.warns(DeprecationWarning, match=f"flowvae.config.{name} moved to flowvae.presets.{name}"):
            assert getattr(flowvae.config, name) is getattr(flowvae.presets, name)
    with pytest.raises(AttributeError):
        flowvae.config.no_such_name  # noqa: B018
