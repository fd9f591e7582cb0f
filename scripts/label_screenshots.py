"""Screenshots of the labeling page for docs/feedback.md: docs/img/label-pairwise.png and docs/img/label-ranking.png.

    .venv/bin/python scripts/label_screenshots.py [--out docs/img]

Writes a small comparisons file to a temporary folder, starts `rlhfkit label` on it (pairwise, then ranking) and
photographs the page in headless Chromium (the system's chromium and chromedriver, as the browser test uses).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.support.ui import WebDriverWait

from rlhfkit.data.comparisons import comparison_row

PAIRWISE = comparison_row(
    "Explain in two sentences why InstructGPT trains a reward model instead of asking people to score every answer.",
    [
        "People are better at comparing two answers than at giving one answer an absolute score, so InstructGPT "
        "collects comparisons.\nA reward model trained on those comparisons can then score millions of new "
        "answers during RL, which no team of labelers could do.",
        "Because scoring is expensive. The reward model is a neural network.",
    ],
)
RANKING = comparison_row(
    [{"role": "user", "content": "Give me a one-line tip for writing clear commit messages."}],
    [
        "Start with a short imperative summary: 'Fix crash when the votes file is empty'.",
        "Write good messages.",
        "Say what changed and why in the first line; details go in the body.",
        "Use emojis so people notice your commits!",
    ],
)


def start_label(comparisons: Path, votes: Path, *args: str) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "rlhfkit.cli", "label", str(comparisons), "--out", str(votes), "--port", "0", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if match := re.search(r"http://127\.0\.0\.1:\d+", line):
            return proc, match.group(0)
    raise SystemExit(f"rlhfkit label did not start (exit {proc.wait()})")


def photograph(driver, comparisons: Path, votes: Path, out: Path, *args: str, keys: str = "") -> None:
    proc, base = start_label(comparisons, votes, *args)
    try:
        driver.get(f"{base}/?labeler=alice")
        WebDriverWait(driver, 20).until(
            lambda d: d.find_element("tag name", "body").get_attribute("data-state") == "ready"
        )
        if keys:
            ActionChains(driver).send_keys(*keys).perform()
        time.sleep(0.3)
        driver.save_screenshot(str(out))
        print(f"wrote {out}")
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img"), help="folder of the PNGs (default docs/img)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,760"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, row in (("pairwise", PAIRWISE), ("ranking", RANKING)):
            (tmp / f"{name}.jsonl").write_text(json.dumps(row) + "\n")
        try:
            photograph(driver, tmp / "pairwise.jsonl", tmp / "p.jsonl", args.out / "label-pairwise.png", keys="w")
            photograph(
                driver,
                tmp / "ranking.jsonl",
                tmp / "r.jsonl",
                args.out / "label-ranking.png",
                "--mode",
                "ranking",
                keys="32",
            )
        finally:
            driver.quit()


if __name__ == "__main__":
    main()
