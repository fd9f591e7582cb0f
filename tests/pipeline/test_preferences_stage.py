"""The pipeline's preferences stage on real-shaped files: per-annotator votes with ties (filtered by the agreement
section, agreement.json written) and K-wise rankings (groups kept whole across the held-out split)."""

import csv
import json
from importlib.resources import files

import yaml

from rlhfkit import lab
from rlhfkit.core.io import read_jsonl
from rlhfkit.pipeline.config import load_config
from rlhfkit.pipeline.context import StageContext
from rlhfkit.pipeline.stages import stage_preferences

DEMO = yaml.safe_load(files("rlhfkit").joinpath("demo.yaml").read_text())


def _stage(tmp_path, **sections) -> tuple[dict, dict]:
    raw = json.loads(json.dumps(DEMO)) | {"output_dir": str(tmp_path / "run")}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    ctx = StageContext(cfg=load_config(raw), manifest=None, outputs={}, say=lambda _: None)
    return stage_preferences(ctx)


def test_annotator_columns_with_ties_through_the_agreement_section(tmp_path):
    path = tmp_path / "annotations.csv"
    pool = lab.LabelerPool(3, noise=0.15, seed=0)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", "response_a", "response_b", "ann1", "ann2", "ann3"])
        for i, r in enumerate(lab.comparison_dataset(200, pool, seed=0)):
            votes = ["0" if i % 7 == j else {1: "1", 0: "2"}[v] for j, v in enumerate(r["votes"])]  # some ties
            writer.writerow([r["prompt"], r["response_a"], r["response_b"], *votes])
    options = {"labeler_cols": "ann1,ann2,ann3", "labels": "1=a,2=b,0=tie"}
    data = {"preferences": str(path), "preference_format": "votes", "preference_options": options}
    outputs, metrics = _stage(tmp_path, data=data, agreement={"min_agreement": 0.6, "ties": "margin"})
    report = json.loads((tmp_path / "run" / "preferences" / "agreement.json").read_text())
    assert report["n_items"] == 200 and set(report["cohen_kappa"]) == {"ann1,ann2", "ann1,ann3", "ann2,ann3"}
    assert metrics["kept"] == report["kept"] and metrics["fleiss_kappa"] == report["fleiss_kappa"]
    pairs = read_jsonl(outputs["train"]) + read_jsonl(outputs["eval"])
    assert len(pairs) == report["kept"] and all(0 < p["margin"] <= 1 for p in pairs)  # ties: margin


def test_rankings_keep_their_groups_whole(tmp_path):
    path = tmp_path / "rankings.jsonl"
    rows = lab.ranking_dataset(60, 4, lab.LabelerPool(5, seed=0), seed=0)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    outputs, metrics = _stage(tmp_path, data={"preferences": str(path), "eval_fraction": 0.2})
    train, held_out = read_jsonl(outputs["train"]), read_jsonl(outputs["eval"])
    train_groups, eval_groups = {p["group"] for p in train}, {p["group"] for p in held_out}
    assert not train_groups & eval_groups and len(eval_groups) == 12  # 20% of 60 rankings, each whole
    assert len(train) + len(held_out) == metrics["n_pairs"] + metrics["n_held_out"]
