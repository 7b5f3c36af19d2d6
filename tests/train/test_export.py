"""A run as people use it: the exported encoder (safetensors + contract + card) loads back to identical
embeddings, a contract mismatch raises, and the run leaves its logs, run information and summary."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clinseq.cli import main as cli_main
from clinseq.models import ContractError, InputContract, check_input, load_pretrained
from clinseq.train.restore import load_run

from .conftest import tiny_config


@pytest.fixture(scope="module")
def tiny_run(ptbxl_store, recipe_module, tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("export") / "run"
    settings = ["train.max_steps=3", "run.loggers=[jsonl, tensorboard]", "eval.enabled=true"]
    settings += ["eval.tasks=[ptbxl/superdiagnostic]", "eval.fractions=[1.0]", "eval.n_boot=20"]
    config = tiny_config(ptbxl_store.path, run_dir, settings)
    out = recipe_module.run(config)
    return {"dir": run_dir, "out": out, "store": ptbxl_store}


def _windows(store, contract: InputContract, n: int = 4) -> torch.Tensor:
    """Real windows of the store in the contract's layout (channels in order, window length)."""
    rec = store.recordings.head(n)
    xs = []
    for rid, names in zip(rec["recording_id"].to_list(), rec["channel_names"].to_list(), strict=True):
        x = store.read_window(rid, 10, contract.window_samples)
        order = [[n.casefold() for n in names].index(c.casefold()) for c in contract.channels]
        xs.append(np.asarray(x)[order])
    return torch.from_numpy(np.stack(xs)).float()


def test_the_run_exports_its_encoder_and_it_loads_back_to_identical_embeddings(tiny_run) -> None:
    run_dir, store = tiny_run["dir"], tiny_run["store"]
    folder = tiny_run["out"]["encoder"]
    assert folder == run_dir / "encoder"
    assert {p.name for p in folder.iterdir()} == {"encoder.safetensors", "encoder.json", "README.md"}
    spec = json.loads((folder / "encoder.json").read_text())
    assert spec["encoder"]["name"] == "resnet1d"
    assert spec["encoder"]["kwargs"] == {
        "widths": [8, 16, 16], "downsample": [4, 4], "kernel_size": 7, "dropout": 0.1, "in_channels": 12,
    }  # fmt: skip
    contract = spec["input"]
    assert contract["modality"] == "ecg" and contract["sampling_rate_hz"] == 100.0
    assert contract["window_s"] == 2.5 and contract["window_samples"] == 250
    assert contract["channels"] == store.recordings["channel_names"][0].to_list()
    assert set(contract["units"]) == {"mV"}
    assert spec["training"]["method"] == "polywindow" and spec["training"]["steps"] == 3
    assert spec["training"]["data"]["pretrain_splits"] == ["val"]

    encoder = load_pretrained(folder, check=store)
    assert not encoder.training
    x = _windows(store, encoder.input_contract)
    check_input(encoder, x)
    trained = load_run(run_dir).encoders["pretrained"]
    assert torch.equal(encoder.embed(x), trained.embed(x))
    assert not torch.equal(encoder.embed(x), load_run(run_dir).encoders["random init"].embed(x))


def test_clinseq_export_encoder_writes_the_same_encoder(tiny_run, tmp_path: Path, capsys) -> None:
    out = tmp_path / "shared"
    assert cli_main(["export", "encoder", str(tiny_run["dir"]), str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    a, b = load_pretrained(out), load_pretrained(tiny_run["dir"] / "encoder")
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    card = (out / "README.md").read_text()
    assert "pretrained with polywindow" in card and "3 optimizer steps" in card
    # The evaluation table of RUN/eval: pretrained and random init, with their CIs.
    rows = json.loads((out / "encoder.json").read_text())["training"]["evaluation"]
    assert [(r["task"], r["encoder"], r["fraction"]) for r in rows] == [
        ("ptbxl/superdiagnostic", "pretrained", 1.0),
        ("ptbxl/superdiagnostic", "random init", 1.0),
    ]
    for r in rows:
        assert r["auroc_low"] <= r["auroc"] <= r["auroc_high"]
        assert f"| ptbxl/superdiagnostic | 0 | {r['encoder']} | 1.000 | {r['auroc']:.3f} [" in card
    assert "ecg: 12 channels" in card and "at 100 Hz" in card and "250 samples" in card


def test_export_of_a_folder_that_is_not_a_run_is_an_error(tmp_path: Path, capsys) -> None:
    assert cli_main(["export", "encoder", str(tmp_path), str(tmp_path / "out")]) == 2
    assert "clinseq: error:" in capsys.readouterr().err
    with pytest.raises(Exception, match="not an exported encoder"):
        load_pretrained(tmp_path)


def test_a_contract_mismatch_raises_instead_of_embedding(tiny_run) -> None:
    store = tiny_run["store"]
    encoder = load_pretrained(tiny_run["dir"] / "encoder")
    contract: InputContract = encoder.input_contract
    x = _windows(store, contract, n=2)
    with pytest.raises(ContractError, match="11 channels; the encoder was trained on 12"):
        check_input(encoder, x[:, :11])
    with pytest.raises(ContractError, match="500 samples per window.*250.*100 Hz"):
        check_input(encoder, torch.cat([x, x], dim=2))  # e.g. the same 2.5 s at 200 Hz
    with pytest.raises(ContractError, match="sampled at 500 Hz; the encoder was trained at 100 Hz"):
        check_input(encoder, {"x": x, "sampling_rate_hz": 500.0})
    with pytest.raises(ContractError, match=r"lacks channel\(s\) \['V6'\]"):
        check_input(encoder, {"x": x, "channel_names": contract.channels[:-1] + ["X"]})
    check_input(
        encoder, {"x": x, "sampling_rate_hz": 100.0, "channel_names": [c.lower() for c in contract.channels]}
    )
    with pytest.raises(ContractError, match="is in uV; the encoder expects mV"):
        check_input(encoder, {"x": x, "units": "uV"})
    # Against a store: another rate, a channel it lacks, other units.
    with pytest.raises(ContractError, match=r"sampled at \[100.0\] Hz; the encoder was trained at 500 Hz"):
        dataclasses.replace(contract, sampling_rate_hz=500.0).check(store)
    with pytest.raises(ContractError, match=r"lacks channel\(s\) \['T7'\]"):
        dataclasses.replace(contract, channels=[*contract.channels[:-1], "T7"]).check(store)
    with pytest.raises(ContractError, match="the encoder expects uV"):
        dataclasses.replace(contract, units=["uV"] * 12).check(store)
    with pytest.raises(ContractError, match="no eeg recordings"):
        dataclasses.replace(contract, modality="eeg").check(store)


def test_the_run_leaves_run_info_logs_and_a_summary(tiny_run) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tiny_run["dir"]
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["packages"]["torch"] and info["device"] == "cpu" and info["world_size"] == 1
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    tb = acc.Scalars("train/loss")
    assert [e.step for e in tb] == [x["step"] for x in lines] == [1, 2, 3]
    assert [e.value for e in tb] == pytest.approx([x["loss"] for x in lines], rel=1e-6)

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["samples"] == 3 * 32
    assert set(summary["phases_s"]) == {"data_wait", "step", "log", "checkpoint"}
    assert all(v > 0 for v in summary["phases_s"].values())
    assert sum(summary["phases_s"].values()) <= summary["train_s"]
    assert summary["samples_per_s"] == pytest.approx(summary["samples"] / summary["train_s"])
    assert summary["peak_host_mib"]["self"] > 100  # torch alone is more
    assert summary["peak_device_mib"] is None
    assert set(summary["extra_s"]) == {"eval", "export"}

    # The evaluation tables went to every logger.
    rows = json.loads((run_dir / "tables" / "eval_ptbxl_superdiagnostic.json").read_text())
    assert {r["encoder"] for r in rows} == {"pretrained", "random init"}
    text = acc.Tensors("eval/ptbxl/superdiagnostic/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| ptbxl/superdiagnostic | 0 | pretrained | 1 |" in text
    assert tiny_run["out"]["summary"].steps == 3
