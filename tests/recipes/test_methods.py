"""Method glue that the smoke runs do not pin down: EHR crops per epoch, ECG ↔ EHR, the PMQ momentum update,
CLOCS.

The ECG ↔ EHR recipe needs MIMIC-IV-ECG waveforms with MIMIC-IV events of the same subjects, which the
shared data does not have: what can be checked without inventing pairs is checked here — the clear error
on a store without events, and the method's forward/backward on synthetic tensors (no loader involved);
the EHR-context encoding is checked in tests/data/test_event_pairs.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clinseq.errors import ConfigError
from clinseq.models import PerLeadEncoder
from clinseq.objectives import CLOCS, CrossModalCLIP
from clinseq.timeline import TimelineStore
from clinseq.train import build_data, load_config
from clinseq.train.methods import CLOCSMethod, ECGEHRMethod

from .conftest import RECIPES


def test_event_crops_follow_the_epoch_in_persistent_workers(mimic_demo_store: Path) -> None:
    """EHR crops depend on the epoch; workers that persist across epochs must still see each batch's."""
    recipe = RECIPES / "mimic_iv" / "patient_contrast.yaml"
    store = TimelineStore.open(mimic_demo_store)

    def crops(num_workers: int) -> list[dict[int, torch.Tensor]]:
        overrides = [f"data.store={mimic_demo_store}", f"data.num_workers={num_workers}"]
        config = load_config(recipe, profile="smoke", overrides=overrides)
        loader = build_data(config, store).loader
        try:
            out = []
            for epoch in range(3):
                first_crop = {}  # patient → codes of its first window, whichever batch it fell in
                for batch in loader.iterate(epoch):
                    half = len(batch["patient_id"]) // 2
                    first_crop.update(
                        zip(batch["patient_id"][:half].tolist(), batch["codes"][:half], strict=True)
                    )
                out.append(first_crop)
            return out
        finally:
            loader.close()

    in_process, workers = crops(0), crops(2)
    for epoch in range(3):
        assert in_process[epoch].keys() == workers[epoch].keys()
        for pid, codes in in_process[epoch].items():
            assert torch.equal(codes, workers[epoch][pid]), (epoch, pid)
    both = in_process[0].keys() & in_process[1].keys()
    assert any(not torch.equal(in_process[0][p], in_process[1][p]) for p in both)  # a new crop each epoch


def test_ecg_ehr_on_a_store_without_events_says_what_it_needs(ptbxl_store) -> None:
    config = load_config(RECIPES / "mimic_iv" / "ecg_ehr.yaml", overrides=[f"data.store={ptbxl_store.path}",
                         "data.split=ptbxl", "data.sampling_rate_hz=100"])  # fmt: skip
    with pytest.raises(ConfigError, match="holds no events: ECG ↔ EHR pairs need a store"):
        build_data(config, ptbxl_store)


def test_a_task_of_another_dataset_is_refused_before_training(eegmat_store: Path) -> None:
    from clinseq.train import check_eval_store

    store = TimelineStore.open(eegmat_store)
    check_eval_store(load_config(RECIPES / "eeg" / "cpc.yaml"), store)  # its own tasks: EEGMAT's
    config = load_config(RECIPES / "eeg" / "cpc.yaml", overrides=["eval.tasks=[ptbxl/superdiagnostic]"])
    with pytest.raises(
        ConfigError, match="task 'ptbxl/superdiagnostic' reads ptbxl stores; .* is a 'eegmat' store"
    ):
        check_eval_store(config, store)


def test_ecg_ehr_method_trains_both_encoders() -> None:
    from clinseq.models import EventTransformer, ProjectionHead, ResNet1d

    torch.manual_seed(0)
    method = ECGEHRMethod(
        ResNet1d(12, widths=(8, 16), downsample=(4,), kernel_size=5),
        ProjectionHead(16, 16, 8),
        CrossModalCLIP(),
        ehr_encoder=EventTransformer(vocab_size=20, dim=16, depth=1, n_heads=2),
        ehr_head=torch.nn.Linear(16, 8),
    )
    b, length = 6, 10
    batch = {
        "x": torch.randn(b, 12, 200),
        "patient_id": torch.arange(b),
        "codes": torch.randint(2, 20, (b, length)),
        "time_delta_s": torch.rand(b, length) * 3600,
        "values": torch.randn(b, length),
        "value_mask": torch.rand(b, length) > 0.5,
        "padding_mask": torch.ones(b, length, dtype=torch.bool),
    }
    out = method(batch)
    out.loss.backward()
    for module in (method.encoder, method.ehr_encoder, method.head, method.ehr_head):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


@pytest.mark.parametrize("mode", ["cmsc", "cmlc", "cmsmlc"])
def test_clocs_views(mode: str) -> None:
    from clinseq.models import ResNet1d

    torch.manual_seed(0)
    in_channels = 3 if mode == "cmsc" else 1
    encoder = ResNet1d(in_channels, widths=(8, 16), downsample=(4,), kernel_size=5)
    if mode != "cmsc":
        encoder = PerLeadEncoder(encoder)
    method = CLOCSMethod(encoder, torch.nn.Linear(16, 8), CLOCS(mode=mode), n_segments=2)
    x = torch.randn(4, 3, 400)
    out = method({"x": x, "patient_id": torch.tensor([0, 1, 2, 0])})
    out.loss.backward()
    assert torch.isfinite(out.loss)
    if mode != "cmsc":  # the probe's embedding of a recording is the mean over its leads
        torch.testing.assert_close(
            encoder.embed(x), encoder.inner.embed(x.reshape(12, 1, 400)).view(4, 3, -1).mean(1)
        )


def test_pmq_key_encoder_follows_the_online_branch_by_ema(ptbxl_store, tmp_path: Path) -> None:
    from clinseq.train import Trainer, build_method

    config = load_config(RECIPES / "ptbxl" / "pmq.yaml", profile="smoke", overrides=[
        f"data.store={ptbxl_store.path}", "data.sampler_kwargs={batch_size: 8}", "train.progress=false",
        "model.encoder_kwargs={widths: [8, 16], downsample: [4], kernel_size: 5}", "model.projection_dim=8",
        "method.options={momentum: 0.9, predictor_hidden_dim: 8}", f"run.out_dir={tmp_path}",
        "method.objective={queue_size: 64}"])  # fmt: skip
    data = build_data(config, ptbxl_store, window_s=10.0)
    method = build_method(config, data)
    trainer = Trainer(method, data.loader, config.train, config.optim, tmp_path)
    key_before = {n: p.detach().clone() for n, p in method.key_encoder.target.named_parameters()}
    trainer.train_step(next(iter(data.loader.iterate(0))))
    online = dict(torch.nn.Sequential(method.encoder, method.head).named_parameters())
    for name, p in method.key_encoder.target.named_parameters():
        torch.testing.assert_close(p, 0.9 * key_before[name] + 0.1 * online[name].detach())
    assert len(method.objective.queue) == 8  # the batch's keys were queued with their patient ids


def test_each_method_builds_a_registered_objective_and_names_registered_samplers() -> None:
    from clinseq.data.registry import SAMPLERS
    from clinseq.objectives.registry import OBJECTIVES
    from clinseq.train.methods import METHODS

    for name, method in METHODS.items():
        assert method.objective_class in OBJECTIVES.values(), name
        assert set(method.samplers) <= set(SAMPLERS), name
