"""The README's "sampler in a plain PyTorch loop" example runs as written, on the real PTB-XL store.

The example is the ```python block between ``<!-- sampler-example -->`` and ``<!-- /sampler-example -->``
in README.md; it opens ``stores/ptbxl100`` (what the README's quickstart converts), which this test
points at the session's converted PTB-XL store.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
START, END = "<!-- sampler-example -->", "<!-- /sampler-example -->"


def example_code(readme: Path) -> str | None:
    """The python code block between the markers, or None when the README has no markers."""
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        return None
    section = text[text.index(START) + len(START) : text.index(END)]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    if match is None:
        raise AssertionError(f"{readme}: no ```python block between {START} and {END}")
    return match.group(1)


def run_example(code: str, store_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    (workdir / "stores").mkdir(exist_ok=True)
    (workdir / "stores" / "ptbxl100").symlink_to(store_path, target_is_directory=True)
    monkeypatch.chdir(workdir)
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - the README's own example
    return namespace


def test_readme_sampler_example_runs(ptbxl_store, tmp_path, monkeypatch):
    code = example_code(README)
    if code is None:
        pytest.skip(f"README.md has no {START} … {END} block yet (the lead adds the sampler example)")
    code_lines = [line for line in code.splitlines() if line.strip()]
    assert len(code_lines) <= 15, "the README example must stay within 15 lines of code"
    namespace = run_example(code, ptbxl_store.path, tmp_path, monkeypatch)
    loss = namespace["loss"]
    assert math.isfinite(float(loss.detach())), "the example's training loop must produce a finite loss"
    sampler = namespace["sampler"]
    assert len(sampler) > 0 and sampler.state_dict()["batches_yielded"] == len(sampler)
