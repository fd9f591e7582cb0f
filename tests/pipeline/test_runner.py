"""The runner's guards, with stand-in stages (no training): one writer per run folder, a killed run's temporary files
removed, a finished stage verified before it is skipped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.resources import files

import pytest
import yaml

from rlhfkit.core.errors import ConfigError
from rlhfkit.pipeline import stages
from rlhfkit.pipeline.config import STAGES, load_config
from rlhfkit.pipeline.lock import LOCK_FILE, RunLock, read_lock
from rlhfkit.pipeline.manifest import changed_files, folder_fingerprint
from rlhfkit.pipeline.runner import _changed_outputs, run_pipeline

DEMO = yaml.safe_load(files("rlhfkit").joinpath("demo.yaml").read_text())


@pytest.fixture
def fake_stages(monkeypatch):
    """Every stage writes ``<stage>/model/weights.bin`` and a checkpoint; returns the list of stages run."""
    ran = []

    def make(stage):
        def fn(ctx):
            ran.append(stage)
            out = ctx.dir(stage) / "model"
            out.mkdir(parents=True, exist_ok=True)
            (out / "weights.bin").write_bytes(stage.encode() * 100)
            (ctx.dir(stage) / "checkpoint-1").mkdir(exist_ok=True)
            return {"model_dir": str(out)}, {"n": len(ran)}

        return fn

    for stage in STAGES:
        monkeypatch.setitem(stages.STAGE_FUNCTIONS, stage, make(stage))
    return ran


def config(tmp_path):
    return load_config({**json.loads(json.dumps(DEMO)), "output_dir": str(tmp_path / "run")})


def test_a_finished_stage_is_verified_before_it_is_skipped(tmp_path, fake_stages):
    cfg = config(tmp_path)
    manifest = run_pipeline(cfg)
    assert fake_stages == list(STAGES)
    recorded = manifest.stage("reward")["files"]
    assert list(recorded) == ["model/weights.bin"]  # checkpoints are not part of what a stage produced
    assert not changed_files(tmp_path / "run" / "reward", recorded)
    assert not (tmp_path / "run" / LOCK_FILE).exists()  # released at the end

    said = []
    run_pipeline(cfg, say=said.append)
    assert fake_stages == list(STAGES) and sum("skipping" in s for s in said) == 6

    (tmp_path / "run" / "reward" / "model" / "weights.bin").write_bytes(b"another run's reward model")
    said.clear()
    run_pipeline(cfg, say=said.append)
    assert "[reward] its files changed since it finished (reward/model/weights.bin (changed))" in said[0]
    assert fake_stages[6:] == ["reward", "rm_eval", "rl", "final_eval"]  # the stage and every one after it
    assert "[sft] done earlier, skipping" in said

    (tmp_path / "run" / "rl" / "model" / "weights.bin").unlink()
    said.clear()
    run_pipeline(cfg, say=said.append)
    assert "rl/model/weights.bin (missing)" in said[0] and fake_stages[10:] == ["rl", "final_eval"]


def test_same_size_and_content_is_unchanged_even_with_a_new_mtime(tmp_path):
    (tmp_path / "a.txt").write_text("abc")
    recorded = folder_fingerprint(tmp_path)
    os.utime(tmp_path / "a.txt", ns=(1, 1))  # copied without keeping times: the content hash still matches
    assert changed_files(tmp_path, recorded) == []
    (tmp_path / "a.txt").write_text("abd")
    assert changed_files(tmp_path, recorded) == ["a.txt (changed)"]


def test_a_killed_runs_temporary_files_are_removed_at_start(tmp_path, fake_stages):
    cfg = config(tmp_path)
    run_pipeline(cfg, until="sft")
    leftovers = [tmp_path / "run" / "reward" / ".model.x1.tmp", tmp_path / "run" / ".manifest.json.x2.tmp"]
    leftovers[0].mkdir(parents=True)
    (leftovers[0] / "model.safetensors").write_bytes(b"half")
    leftovers[1].write_text("{")
    (tmp_path / "run" / "sft" / "notes.txt").write_text("a file the user put there stays")
    said = []
    run_pipeline(cfg, say=said.append)
    assert sum("[cleanup] removing" in s for s in said) == 2
    assert not [p for p in (tmp_path / "run").rglob("*.tmp")]
    assert (tmp_path / "run" / "sft" / "notes.txt").exists()


def test_a_second_run_on_the_folder_is_refused_naming_the_pid(tmp_path, fake_stages):
    cfg = config(tmp_path)
    code = f"from rlhfkit.pipeline.lock import RunLock; RunLock({str(tmp_path / 'run')!r}).acquire(); print('held')"
    holder = subprocess.Popen(
        [sys.executable, "-c", code + "; import time; time.sleep(60)"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(
            ConfigError, match=rf"is in use by rlhfkit run pid {holder.pid} on host .*one run per folder"
        ):
            run_pipeline(cfg)
        assert fake_stages == [] and read_lock(tmp_path / "run")["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()
    said = []
    run_pipeline(cfg, say=said.append)  # its holder is dead now: the stale lock is taken over, with a notice
    assert any(f"took over the lock of run pid {holder.pid}" in s for s in said) and fake_stages == list(STAGES)
    assert read_lock(tmp_path / "run") is None


def test_the_lock_is_released_when_a_stage_fails(tmp_path, monkeypatch):
    def fail(ctx):
        raise ConfigError("boom")

    monkeypatch.setitem(stages.STAGE_FUNCTIONS, "sft", fail)
    with pytest.raises(ConfigError, match="boom"):
        run_pipeline(config(tmp_path))
    assert read_lock(tmp_path / "run") is None
    with RunLock(tmp_path / "run") as lock:  # the folder can be locked again
        assert lock.held and read_lock(tmp_path / "run")["pid"] == os.getpid()
    assert read_lock(tmp_path / "run") is None


def test_a_stage_shared_from_another_folder_is_verified_where_it_lives(tmp_path, monkeypatch):
    """`rlhfkit compare` records the shared stages of its base run in each algorithm's manifest: their files are
    checked in the folder they were recorded in (not re-done because the algorithm's folder has no copy), and a change
    there still redoes them."""
    base, run = tmp_path / "base", tmp_path / "run"
    (base / "sft" / "model").mkdir(parents=True)
    (base / "sft" / "model" / "weights.bin").write_bytes(b"abc")
    entry = {"status": "done", "files": folder_fingerprint(base / "sft"), "folder": str(base / "sft")}

    class Ctx:
        cfg = None

        @staticmethod
        def dir(stage):
            return run / stage

    assert _changed_outputs(Ctx, "sft", entry) == []
    (base / "sft" / "model" / "weights.bin").write_bytes(b"abd")
    assert _changed_outputs(Ctx, "sft", entry) == [f"{base / 'sft'}/model/weights.bin (changed)"]
