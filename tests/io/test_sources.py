"""The source registry: the CLI, the pretrain config and the builders all read the same names."""

from __future__ import annotations

import argparse
import inspect
import subprocess
import sys

import pytest

from clinseq.errors import ConfigError
from clinseq.io.sources import SOURCES


@pytest.mark.parametrize("name", list(SOURCES))
def test_every_factory_imports_and_takes_its_options(name: str) -> None:
    spec = SOURCES[name]
    factory = spec.load()
    keywords = [o.keyword for o in spec.options]
    assert len(set(keywords)) == len(keywords), f"{name}: an option is declared twice"
    parameters = inspect.signature(factory).parameters
    if spec.events:
        assert {"progress", *keywords} <= set(parameters), f"{spec.factory} lacks an option's keyword"
    else:
        methods = [
            m for m in ("index", "load", "patients", "manifest_extra") if callable(getattr(factory, m, None))
        ]
        assert isinstance(factory, type) and len(methods) == 4, f"{spec.factory} is not a Source class"
        own = set(keywords) - {"workers", "on_error"}  # those two go to clinseq.io.convert
        assert own <= set(parameters), f"{spec.factory} lacks an option's keyword"
    if spec.rate_option is not None:
        assert spec.rate_option in keywords


def _convert_kinds() -> dict[str, argparse.ArgumentParser]:
    from clinseq.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    kinds = next(a for a in commands.choices["convert"]._actions if isinstance(a, argparse._SubParsersAction))
    return dict(kinds.choices)


def test_the_cli_converts_exactly_the_registered_sources_with_their_options() -> None:
    kinds = _convert_kinds()
    assert list(kinds) == list(SOURCES)
    for name, parser in kinds.items():
        flags = {s for a in parser._actions for s in a.option_strings}
        assert {o.flag for o in SOURCES[name].options} | {"--quiet", "-h", "--help"} == flags


def test_importing_the_registry_loads_no_reader() -> None:
    code = (
        "import sys, clinseq.cli, clinseq.io.sources; "
        "print(sorted(m for m in ('polars', 'pyarrow', 'wfdb', 'mne', 'clinseq.io.eeg') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_pretrain_config_accepts_every_source_and_names_them_on_a_typo() -> None:
    from clinseq.train.config import load_config

    for name in SOURCES:
        assert load_config(overrides=[f"data.source={name}"]).data.source == name
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["data.source=mimic-iv-eeg"])
    assert all(repr(name) in str(info.value) for name in SOURCES)


def test_pretrain_options() -> None:
    assert SOURCES["ptbxl"].pretrain_options_for(None) == {"workers": 2}
    options = SOURCES["ptbxl"].pretrain_options_for(500.0)
    assert options == {"workers": 2, "sampling_rate_hz": 500} and type(options["sampling_rate_hz"]) is int
    assert SOURCES["eeg"].pretrain_options_for(128) == {"workers": 2, "resample_hz": 128.0}
    assert SOURCES["wfdb"].pretrain_options_for(500.0) == {"workers": 2}  # no rate option: kept by the store
    assert SOURCES["mimic-iv"].pretrain_options_for(None) == {}


def test_an_unknown_option_is_refused_before_anything_is_read(tmp_path) -> None:
    with pytest.raises(TypeError, match="resample_hz"):
        SOURCES["ptbxl"].convert(tmp_path / "nowhere", tmp_path / "out", resample_hz=250)
    assert not (tmp_path / "out").exists()
