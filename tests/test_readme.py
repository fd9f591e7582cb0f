"""The README's Python API example runs as written (with fewer steps), so the documented API cannot drift."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def python_api_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python API: build your own recipe") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_python_api_example_runs(tmp_path, monkeypatch, capsys):
    code = python_api_block()
    shrunk = re.sub(r"max_steps=\d+", "max_steps=5", code)
    shrunk = re.sub(r"total_episodes=\d+", "total_episodes=64", shrunk)
    assert shrunk.count("max_steps=5") == 2 and "total_episodes=64" in shrunk  # the substitutions matched
    monkeypatch.chdir(tmp_path)  # runs/my/... lands in tmp_path
    exec(compile(shrunk, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert out.startswith("runs/my/ppo/model ")  # the example's last line: model folder and alert count
    assert (tmp_path / "runs/my/ppo/model/model.safetensors").exists()
    assert (tmp_path / "runs/my/rm_eval").is_dir()
