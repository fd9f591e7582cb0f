"""The README's Python API example runs as written (with fewer steps), its quickstart config passes ``--check``, and
every relative link in README.md and docs/*.md leads to a file (and a heading, where it names one)."""

import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


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


def _anchor(heading: str) -> str:
    """GitHub's anchor of a markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # a '# comment' in a code block is no heading
    return {_anchor(m) for m in re.findall(r"^#+ (.+)$", text, re.M)}


def _prose(page: Path) -> str:
    """The page without code: fenced blocks and inline code spans (`f[x](y)` is no link)."""
    return re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", page.read_text(), flags=re.S))


def test_relative_links_in_readme_and_docs_resolve():
    broken = []
    for page in PAGES:
        for target in LINK.findall(_prose(page)):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "links that lead nowhere:\n" + "\n".join(broken)


def test_readme_links_every_docs_page():
    readme = (REPO / "README.md").read_text()
    unlinked = [p.name for p in PAGES[1:] if f"(docs/{p.name}" not in readme]
    assert not unlinked, f"docs pages the README's index does not link: {unlinked}"


def quickstart_config() -> dict:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Quickstart") :]
    return yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))


def test_readme_quickstart_config_passes_check(tmp_path, monkeypatch):
    from rlhfkit.pipeline.validate import check_pipeline

    mine = quickstart_config()
    assert set(mine["data"]) == {"sft", "preferences", "prompts"}
    monkeypatch.chdir(tmp_path)  # the README's data files and output_dir land in tmp_path
    rows = {
        "sft": [{"prompt": f"Q: List {i % 3 + 1} fruits.\nA:", "completion": " apple, pear."} for i in range(40)],
        "preferences": [{"prompt": f"Q{i}", "chosen": " apple.", "rejected": " apple"} for i in range(40)],
        "prompts": [{"prompt": f"Q: List {i % 3 + 1} fruits.\nA:"} for i in range(400)],
    }
    for key, file in mine["data"].items():
        Path(file).write_text("".join(json.dumps(r) + "\n" for r in rows[key]))
    demo = yaml.safe_load((REPO / "rlhfkit" / "demo.yaml").read_text())  # what `rlhfkit demo --print-config` prints
    edited = {**demo, **mine}
    check_pipeline(edited, sources=False)  # every value, the README's model section included
    cfg = check_pipeline({**edited, "model": demo["model"]})  # and the data files, with the lab's model (no network)
    assert cfg.data.sft == mine["data"]["sft"] and str(cfg.output_dir) == mine["output_dir"]
