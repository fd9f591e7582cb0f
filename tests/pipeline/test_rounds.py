"""Iterative RLHF (``rounds:``): the keys checked at the door, a round's stages in the manifest, a lab run of three
rounds end to end from ``rlhfkit run``, and a SIGKILL in round 2 resumed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from rlhfkit.cli import main
from rlhfkit.core.errors import ConfigError
from rlhfkit.pipeline.config import STAGES, load_config, stage_digests
from tests.pipeline.test_pipeline import run_and_kill, tiny


def tiny_rounds(out: Path, **rounds) -> dict:
    """The pipeline's smoke config with three rounds of 16 fresh lab prompts, 3 answers each."""
    cfg = tiny(out)
    cfg["data"] = {"eval_fraction": 0.25}  # a round's 48 pairs: about 12 held out for its rm_eval
    cfg["preferences"] = {"max_new_tokens": 24}
    cfg["rounds"] = {"count": 3, "prompts_per_round": 16, "k": 3, "reward_refresh": "continue", "mix": 0.5, **rounds}
    return cfg


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"rounds": {"count": 0}}, r"rounds.count=0: must be >= 1"),
        ({"rounds": {"cuont": 2}}, r"unknown key\(s\) \['rounds.cuont'\]"),
        ({"rounds": {"mix": 1.5}}, r"rounds.mix=1.5: must be"),
        ({"rounds": {"k": 1}}, r"rounds.k=1: must be >= 2"),
        ({"rounds": {"reward_refresh": "tune"}}, "rounds.reward_refresh='tune' must be one of continue, retrain"),
        ({"rounds": {"labels_per_round": 2}}, r"rounds.labels_per_round=2 labels no prompt: .* at least 3"),
        ({"rl": {"algorithm": "grpo", "layout": "shared"}}, None),  # layout is PPO's: GRPO rounds run
        ({"rl": {"algorithm": "dpo"}, "reward": {"ensemble_size": 2}}, "dpo picks each prompt's best and worst"),
        ({"model": {"preset": "lora"}}, r"rounds.count=3 with rl.algorithm: ppo needs model.preset: full and PPO's"),
        ({"model": {"preset": "lora"}, "rl": {"algorithm": "grpo"}}, None),  # round r-1's adapter trains on
        ({"preferences": {"source": "comparisons", "labels": "people", "votes": "v.jsonl"}}, None),  # rounds wait
        ({"preferences": {"source": "comparisons", "labels": "people"}}, r"labels=people reads the votes people gave"),
        ({"preferences": {"source": "comparisons", "min_votes": 10}}, r"min_votes=10 is read only with .* people"),
        ({"preferences": {"source": "comparisons", "labels": "people", "votes": "v", "min_votes": 0}}, "min_votes=0"),
        ({"rl": {"algorithm": "ppo", "layout": "shared"}}, r"ppo needs model.preset: full and PPO's separate layout"),
        ({"data": {"preferences": "prefs.jsonl"}}, r"data.preferences='prefs.jsonl' cannot; set preferences.source"),
        ({"reward": {"ensemble_size": 2}}, "rounds.reward_refresh=continue cannot continue a reward ensemble"),
    ],
)
def test_rounds_keys_are_checked_at_the_door(tmp_path, patch, message):
    cfg = tiny_rounds(tmp_path / "run")
    for section, values in patch.items():
        cfg.setdefault(section, {}).update(values)
    if message is None:  # allowed with rounds
        assert load_config(cfg).rounds.count == 3
        return
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(cfg)
    assert len([p for p in caught.value.problems if re.search(message, p)]) == 1  # one line for it
    assert not (tmp_path / "run").exists()


def test_the_door_check_is_one_error_line_from_the_cli(tmp_path, capsys):
    cfg = tiny_rounds(tmp_path / "run", mix=-0.1)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--check"]) == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("error:")] and "rounds.mix=-0.1" in err
    assert "Traceback" not in err


def test_rounds_are_stages_before_final_eval_and_one_round_is_the_pipeline(tmp_path):
    cfg = load_config(tiny_rounds(tmp_path / "run"))
    names = ("comparisons", "preferences", "reward", "rm_eval", "rl")
    round_stages = [f"round-{r}/{s}" for r in (2, 3) for s in names]
    assert cfg.stages() == (*STAGES[:-1], *round_stages, "final_eval")
    assert cfg.trainer_config("ppo", "round-2/rl").output_dir == str(tmp_path / "run" / "round-2" / "rl")
    one = tiny_rounds(tmp_path / "run", count=1)
    plain = tiny_rounds(tmp_path / "run")
    del plain["rounds"]
    # count 1 is today's pipeline: the same stages, the same hashes (no stage redone by adding the section)
    assert {s: d for s, (_, d) in stage_digests(load_config(one)).items()} == {
        s: d for s, (_, d) in stage_digests(load_config(plain)).items()
    }
    # a rounds key changes the rounds' stages and final_eval, never round 1's
    a, b = stage_digests(cfg), stage_digests(load_config(tiny_rounds(tmp_path / "run", mix=0.25)))
    assert [s for s in a if a[s][1] != b[s][1]] == [*round_stages, "final_eval"]


def _assert_finished(run: Path) -> dict:
    manifest = json.loads((run / "manifest.json").read_text())
    stages = manifest["stages"]
    assert list(stages)[-1] == "final_eval" and all(s["status"] == "done" for s in stages.values())
    for r in (2, 3):
        for s in ("comparisons", "preferences", "reward", "rm_eval", "rl"):
            assert f"round-{r}/{s}" in stages and (run / f"round-{r}" / s).is_dir()
        rm = stages[f"round-{r}/rm_eval"]["metrics"]
        assert 0 <= rm["accuracy_stale"] <= 1 and 0 <= rm["accuracy"] <= 1 and "accuracy_original" in rm
        assert (
            stages[f"round-{r}/comparisons"]["outputs"]["policy"]
            == stages["rl" if r == 2 else f"round-{r - 1}/rl"]["outputs"]["model_dir"]
        )
    assert (run / "round-3" / "rl" / "model" / "model.safetensors").exists()
    report = (run / "report.md").read_text()
    assert "## Rounds" in report and "| 3 |" in report
    return manifest


@pytest.mark.slow
def test_three_lab_rounds_end_to_end_then_a_sigkill_in_round_two_resumes(tmp_path):
    """``rlhfkit run`` killed while round 2's PPO has a checkpoint, rerun: the finished stages are skipped, round 2's
    rl resumes, rounds 3 and final_eval run; the report has the per-round table."""
    cfg = tiny_rounds(tmp_path / "run")
    cfg["ppo"].update(save_steps=1)
    rl2 = tmp_path / "run" / "round-2" / "rl"
    rerun = run_and_kill(cfg, tmp_path, rl2, "checkpoint-*/trainer_state.json")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["round-2/reward"]["status"] == "done"
    assert manifest["stages"]["round-2/rl"]["status"] == "running"
    done = rerun()
    assert "[round-2/rm_eval] done earlier, skipping" in done.stdout and "[round-2/rl] resuming" in done.stdout
    _assert_finished(tmp_path / "run")


@pytest.mark.slow
def test_iterative_dpo_two_rounds_best_vs_worst_by_the_refreshed_reward_model(tmp_path):
    """rl.algorithm: dpo with two rounds: round 2 trains DPO from round 1's policy on best-vs-worst pairs."""
    cfg = tiny_rounds(tmp_path / "run", count=2)
    cfg["rl"]["algorithm"] = "dpo"
    cfg["dpo"].update(max_steps=4, save_steps=2, logging_steps=2, kl_samples=4)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path)]) == 0
    stages = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]
    assert all(s["status"] == "done" for s in stages.values()) and "round-2/rl" in stages
    pairs = [
        json.loads(line) for line in (tmp_path / "run" / "round-2" / "rl" / "pairs.jsonl").read_text().splitlines()
    ]
    prompts = {
        json.dumps(r["prompt"]) for r in map(json.loads, open(stages["round-2/comparisons"]["outputs"]["comparisons"]))
    }
    assert pairs and all(p["chosen"] != p["rejected"] and json.dumps(p["prompt"]) in prompts for p in pairs)
    assert (
        stages["round-2/rl"]["metrics"]["algorithm"] == "dpo"
        and "implicit_accuracy" in stages["round-2/rl"]["metrics"]
    )


def _people(cfg: dict, votes: Path) -> dict:
    cfg["preferences"] = {
        "source": "comparisons",
        "labels": "people",
        "votes": str(votes),
        "prompts": 16,
        "k": 3,
        "max_new_tokens": 24,
    }
    return cfg


def _label(comparisons: str, votes: Path, share: float = 1.0) -> int:
    """The lab's labelers ("people" here) vote on the first ``share`` of the comparisons, into ``votes``."""
    from rlhfkit import lab
    from rlhfkit.data.comparisons import AppendLog, read_comparisons

    rows = read_comparisons(comparisons)
    rows = rows[: max(1, int(len(rows) * share))]
    labelled = lab.LabelerPool(3, noise=0.1, seed=1).answer(rows, seed=2)
    with AppendLog(votes) as log:
        log.append(*labelled)
    return len(labelled)


def _run(path: Path, capsys, *flags: str) -> tuple[dict, str]:
    assert main(["run", str(path), *flags]) == 0
    out = capsys.readouterr().out
    return json.loads((Path(yaml.safe_load(path.read_text())["output_dir"]) / "manifest.json").read_text()), out


def test_people_labels_pause_the_run_and_the_same_command_resumes_it(tmp_path, capsys):
    """``labels: people``: the preferences stage samples its comparisons, then stops -- exit 0, the manifest says
    ``waiting for labels`` with the exact `rlhfkit label` command -- until the votes file has enough votes; the same
    `rlhfkit run` goes on (``--min-votes``: with fewer)."""
    votes = tmp_path / "people" / "votes.jsonl"
    cfg = _people(tiny(tmp_path / "run"), votes)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    manifest, out = _run(path, capsys, "--until", "preferences")
    entry = manifest["stages"]["preferences"]
    comparisons = tmp_path / "run" / "preferences" / "comparisons.jsonl"
    assert entry["status"] == "waiting for labels" and manifest["stages"]["sft"]["status"] == "done"
    command = f"rlhfkit label {comparisons} --out {votes}"
    assert entry["waiting"]["command"] == command and command in out and "waiting for labels" in out
    assert entry["waiting"]["have"] == {"votes": 0, "pairs_labelled": 0, "pairs": entry["waiting"]["have"]["pairs"]}
    assert out.rstrip().endswith("goes on with N votes)")  # said again last, after the summary
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| preferences | waiting for labels | 0 of 48 pairs labelled |" in report
    before = comparisons.read_bytes()

    n = _label(str(comparisons), votes, share=0.5)  # half labelled: still waiting, the comparisons kept
    manifest, out = _run(path, capsys, "--until", "preferences")
    entry = manifest["stages"]["preferences"]
    assert entry["status"] == "waiting for labels" and entry["waiting"]["have"]["votes"] == n
    assert "[preferences] resuming" in out and comparisons.read_bytes() == before

    manifest, out = _run(path, capsys, "--until", "preferences", "--min-votes", str(n))  # enough for the user
    entry = manifest["stages"]["preferences"]
    assert entry["status"] == "done" and entry["metrics"]["n_votes"] == n and "waiting" not in out
    assert manifest["stages"]["sft"]["status"] == "done"  # --min-votes redid nothing


@pytest.mark.slow
def test_people_label_each_round_between_runs_of_the_same_command(tmp_path, capsys):
    """Two rounds labelled by "people" (the lab's labelers writing the votes files between runs): the run waits in
    round 1's preferences, then in round 2's (its votes file beside the first, named in the command), then
    finishes; each wait is exit 0 and the manifest's ``waiting for labels``."""
    votes = tmp_path / "people" / "votes.jsonl"
    cfg = _people(tiny_rounds(tmp_path / "run", count=2), votes)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    manifest, _ = _run(path, capsys)
    assert manifest["stages"]["preferences"]["status"] == "waiting for labels"
    _label(manifest["stages"]["preferences"]["waiting"]["comparisons"], votes)
    manifest, out = _run(path, capsys)
    entry = manifest["stages"]["round-2/preferences"]
    assert entry["status"] == "waiting for labels" and manifest["stages"]["round-2/comparisons"]["status"] == "done"
    round_votes = tmp_path / "people" / "votes.round-2.jsonl"
    assert entry["waiting"]["votes"] == str(round_votes) and f"--out {round_votes}" in out
    assert entry["waiting"]["comparisons"] == manifest["stages"]["round-2/comparisons"]["outputs"]["comparisons"]
    assert "final_eval" not in manifest["stages"] and manifest["stages"]["rl"]["status"] == "done"
    _label(entry["waiting"]["comparisons"], round_votes)
    manifest, out = _run(path, capsys)
    stages = manifest["stages"]
    assert all(s["status"] == "done" for s in stages.values()) and "final_eval" in stages
    assert "[rl] done earlier, skipping" in out and "[round-2/preferences] resuming" in out
    assert stages["round-2/preferences"]["metrics"]["n_votes"] > 0
    assert "## Rounds" in (tmp_path / "run" / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["grpo", "rloo", "best_of_n"])
def test_two_rounds_of_each_sampling_algorithm_keep_the_sft_model_as_the_reference(tmp_path, algorithm):
    """GRPO, RLOO and best-of-N rounds: round 2's RL starts from round 1's policy; its first KL, measured before any
    update, is to the SFT model, so it is round 1's distance from SFT, not exactly 0."""
    cfg = tiny_rounds(tmp_path / "run", count=2)
    cfg["rl"]["algorithm"] = algorithm
    cfg.setdefault(algorithm, {}).update(
        {"best_of_n": {"rounds": 1, "prompts_per_round": 8, "num_samples": 2, "max_steps": 2}}.get(
            algorithm, {"max_steps": 4, "logging_steps": 1, "learning_rate": 5e-3}
        )
    )
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path)]) == 0
    stages = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]
    assert all(s["status"] == "done" for s in stages.values())
    assert stages["round-2/rl"]["metrics"]["algorithm"] == algorithm
    first = json.loads((tmp_path / "run" / "round-2" / "rl" / "log_history.json").read_text())[0]
    kl = first.get("kl_per_sequence", first.get("kl"))
    assert kl is not None and kl != 0, first  # exactly 0 against its own start (RLOO's k1 estimate may be negative)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["grpo", "dpo"])
def test_lora_rounds_train_the_last_rounds_adapter_further(tmp_path, algorithm):
    """preset lora: round 2 starts from the SFT model plus round 1's adapter (recorded in the manifest), which it
    trains further; the reference stays the SFT model (the adapter turned off)."""
    cfg = tiny_rounds(tmp_path / "run", count=2)
    cfg["model"]["preset"] = "lora"
    cfg["rl"]["algorithm"] = algorithm
    steps = {"max_steps": 4, "logging_steps": 1, "learning_rate": 5e-3}
    cfg.setdefault(algorithm, {}).update({**steps, "kl_samples": 4} if algorithm == "dpo" else steps)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path)]) == 0
    stages = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]
    assert all(s["status"] == "done" for s in stages.values())
    one, two = stages["rl"]["outputs"], stages["round-2/rl"]["outputs"]
    assert one["adapter"] == str(tmp_path / "run" / "rl" / "adapter") and Path(one["adapter"]).is_dir()
    assert two["adapter"] == str(tmp_path / "run" / "round-2" / "rl" / "adapter")
    log = json.loads((tmp_path / "run" / "round-2" / "rl" / "log_history.json").read_text())
    kl = next(r.get("kl", r.get("objective/kl")) for r in log if "kl" in r or "objective/kl" in r)
    assert kl != 0  # round 1's adapter measured against the SFT model from the first step (a fresh one: exactly 0)
