"""The typed config: YAML → profile → --set, key and type checks with precise messages, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from clinseq.errors import ConfigError
from clinseq.train import load_config, save_config, validate_components
from clinseq.train.config import config_to_dict, parse_set

BASE = {
    "run": {"name": "t"},
    "data": {"window_s": 2.5, "sampler": "polywindow", "sampler_kwargs": {"recordings_per_batch": 8}},
    "method": {"name": "polywindow"},
    "profiles": {
        "smoke": {"train": {"max_steps": 7}, "data": {"sampler_kwargs": {"windows_per_recording": 2}}}
    },
}


@pytest.fixture()
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE))
    return path


def test_file_profile_and_set_are_applied_in_order(config_file: Path) -> None:
    c = load_config(config_file, profile="smoke", overrides=["train.max_steps=9", "optim.lr=3e-4"])
    assert c.train.max_steps == 9  # --set wins over the profile
    assert c.optim.lr == pytest.approx(3e-4) and isinstance(c.optim.lr, float)
    # The profile merges into the free-form mapping key by key, keeping the file's other keys.
    assert c.data.sampler_kwargs == {"recordings_per_batch": 8, "windows_per_recording": 2}
    assert load_config(config_file).train.max_steps == 1000  # the dataclass default without the profile


def test_set_values_are_parsed_as_yaml() -> None:
    assert parse_set("data.channels=[I, II]") == (["data", "channels"], ["I", "II"])
    assert parse_set("train.grad_clip_norm=null") == (["train", "grad_clip_norm"], None)
    assert parse_set("optim.lr=1e-3") == (["optim", "lr"], 1e-3)  # YAML 1.1 would read a string
    c = load_config(overrides=["optim.weight_decay=0", "data.window_s=5"])
    assert c.optim.weight_decay == 0.0 and isinstance(c.optim.weight_decay, float)  # int → float
    assert c.data.window_s == 5.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "optim.lrr=1",
            "unknown config key 'optim.lrr'; did you mean 'lr'? valid keys here: betas, eps, lr,",
        ),
        ("trian.max_steps=3", "unknown config key 'trian'; did you mean 'train'?"),
        ("train.max_steps=1.5", "train.max_steps: expected int, got 1.5 (float)"),
        ("train.max_steps=true", "train.max_steps: expected int, got True (bool)"),
        (
            "train.precision=bf32",
            "train.precision: expected one of 'auto', 'fp32', 'bf16', 'fp16', got 'bf32'",
        ),
        ("data.channels=I", "data.channels: expected a list of str or null, got 'I'"),
        ("train.max_steps=0", "train.max_steps: expected an integer >= 1, got 0"),
        ("optim.betas=[0.9]", "optim.betas: expected two values in [0, 1), got [0.9]"),
        ("data.prefetch_factor=0", "data.prefetch_factor: expected >= 1, got 0"),
        ("data.pin_memory=yes please", "data.pin_memory: expected bool or null, got 'yes please'"),
        ("eval.seeds=[0, 0]", "eval.seeds: expected one or more different seeds, got [0, 0]"),
        ("method.name=byol", "unknown config key 'method.name=byol'"),
        ("model.encoder=resnet", "unknown config key 'model.encoder=resnet'; did you mean 'resnet1d'?"),
        ("data.sampler=patients", "unknown config key 'data.sampler=patients'; did you mean 'patient'?"),
        ("optim", "--set expects key=value"),
    ],
)
def test_bad_keys_and_types_give_precise_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert message in str(info.value)


def test_unknown_profile_and_bad_yaml(tmp_path: Path, config_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown profile 'fast'.*available: smoke"):
        load_config(config_file, profile="fast")
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_saved_config_reloads_identically(tmp_path: Path, config_file: Path) -> None:
    c = load_config(
        config_file, profile="smoke", overrides=["data.views=[{name: gaussian_noise, snr_db: 20}]"]
    )
    path = save_config(c, tmp_path / "config.yaml", command="clinseq pretrain c.yaml")
    text = path.read_text()
    assert (
        text.startswith("# Resolved clinseq pretraining config")
        and "# command: clinseq pretrain c.yaml" in text
    )
    again = load_config(path)
    a, b = config_to_dict(c), config_to_dict(again)
    assert Path(b.pop("recipe")) == c.recipe_path()  # written absolute, so it resolves from the run folder
    a.pop("recipe")
    assert a == b


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "model.encoder_kwargs={widht: 3}",
            "unknown config key 'model.encoder_kwargs.widht'; did you mean 'widths'",
        ),
        (
            "model.encoder_kwargs={kernel_size: 2.5}",
            "model.encoder_kwargs.kernel_size: expected int, got 2.5",
        ),
        ("model.encoder_kwargs={in_channels: 3}", "model.encoder_kwargs.in_channels is set by clinseq"),
        ("data.sampler_kwargs={recordings_per_batch: 8, min_overlap: high}", "min_overlap: expected float"),
        ("data.views=[{name: gausian_noise}]", "did you mean 'gaussian_noise'"),
        ("data.views=[{name: gaussian_noise, snr: 3}]", "unknown config key 'data.views[0].snr'"),
        ("data.views=[{name: time_mask, p: 2}]", "data.views[0].p: expected a probability in [0, 1], got 2"),
        ("method.objective={variant: best}", None),  # a value only the objective can judge: checked at build
        ("method.objective={temprature: 0.1}", "unknown config key 'method.objective.temprature'"),
        ("method.options={foo: 1}", "unknown config key 'method.options.foo'"),
        ("data.sampler=random", "unknown config key 'data.sampler_kwargs.recordings_per_batch'"),
        (
            "data.sampler=random;data.sampler_kwargs={batch_size: 8}",
            "method 'polywindow' needs data.sampler in",
        ),
        (
            "eval.tasks=[ptbxl/superdiag]",
            "unknown config key 'eval.tasks=ptbxl/superdiag'; did you mean 'ptbxl/superdiagnostic'?",
        ),
        ("eval.options={fold: 5}", "unknown config key 'eval.options.fold'; did you mean 'folds'"),
        ("eval.options={window_s: 5}", None),  # the probe may embed other windows than pretraining's
        ("eval.options={n_boot: 5}", "eval.options.n_boot is set by the recipe from eval.n_boot"),
    ],
)
def test_component_keywords_are_checked_against_signatures(config_file: Path, override: str, message) -> None:
    config = load_config(config_file, overrides=override.split(";"))
    if message is None:
        validate_components(config)
        return
    with pytest.raises(ConfigError) as info:
        validate_components(config)
    assert message in str(info.value)
