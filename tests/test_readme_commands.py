"""The README's quickstart commands are the ones CI runs."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _command_after(marker: str) -> str:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(marker))
    return lines[index + 1].strip()


def test_ci_runs_the_readme_test_command_word_for_word() -> None:
    command = _command_after("# 2. install the test extras")
    assert command.endswith(".venv/bin/pytest -q"), command
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert command in ci_lines, f".ci/run does not run the README's test command {command!r}"


def test_both_quickstart_commands_install_torch_first() -> None:
    for marker in ("# 1. install and run the main job", "# 2. install the test extras"):
        command = _command_after(marker)
        assert command.index("pip install torch==") < command.index("pip install -e"), command


def test_the_layout_section_names_every_package_and_top_level_module() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = text[text.index("## Layout") :]
    layout = layout[: layout.index("\n## ")]
    package = ROOT / "src" / "clinseq"
    names = [f"{p.name}/" for p in package.iterdir() if (p / "__init__.py").is_file()]
    names += [p.name for p in package.glob("*.py") if p.name != "__init__.py"]
    missing = [n for n in sorted(names) if n not in layout]
    assert not missing, f"README.md's Layout section does not mention {missing}"
