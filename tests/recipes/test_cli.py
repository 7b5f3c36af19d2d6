"""`clinseq pretrain` reports configuration mistakes as one-line errors with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from clinseq.cli import main

from .conftest import RECIPES


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "optim.lrr=3e-4"], "unknown config key 'optim.lrr'; did you mean 'lr'?"),
        (["--profile", "fast"], "unknown profile 'fast'"),
        (
            ["--set", "model.encoder_kwargs={widths: 3}"],
            "model.encoder_kwargs.widths: expected a list of int",
        ),
        (["--set", "recipe=missing.py"], "recipe script"),
    ],
)
def test_bad_configs_exit_2_with_the_reason(args: list[str], message: str, capsys, tmp_path: Path) -> None:
    rc = main(["pretrain", str(RECIPES / "ptbxl" / "pclr.yaml"), "--out", str(tmp_path / "run"), *args])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("clinseq: error: ") and message in err


def test_resume_without_a_run_folder_says_so(capsys, tmp_path: Path) -> None:
    assert main(["pretrain", "--resume", str(tmp_path)]) == 2
    assert "no config.yaml there" in capsys.readouterr().err
    assert main(["pretrain"]) == 2
    assert "pass a config file" in capsys.readouterr().err
