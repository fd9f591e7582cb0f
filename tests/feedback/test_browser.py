"""The labeling page in a real browser (headless Chromium driven by Selenium): two labelers label by keys, one undoes
a vote, the server is SIGKILLed and restarted mid-vote, model HTML shows as text; then the votes file and
``rlhfkit data agreement --json``."""

import json
import shutil
import signal
import socket
from collections import Counter

import pytest

from rlhfkit.cli import main
from rlhfkit.data.votelog import read_vote_log, read_vote_rows

from .conftest import IMG, SCRIPT, write_comparisons

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver; .ci/run installs them)",
)


def new_browser(width: int = 1400, height: int = 900):
    """Headless Chromium through the system's chromedriver (no download, no network)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the dev extra)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def browser():
    driver = new_browser()
    yield driver
    driver.quit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Page:
    """One labeler's page: press keys, wait for the server's answer, read what is shown."""

    def __init__(self, driver, base: str, labeler: str):
        self.driver = driver
        driver.get(f"{base}/?labeler={labeler}")
        self.wait_for(lambda body: body.get_attribute("data-state") in ("ready", "done"))
        self.xss_seen = 0

    def body(self):
        return self.driver.find_element("tag name", "body")

    def wait_for(self, condition, timeout: float = 20.0):
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.driver, timeout, poll_frequency=0.02).until(lambda d: condition(self.body()))

    def done(self) -> int:
        return int(self.body().get_attribute("data-done"))

    def press(self, *keys: str) -> None:
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(self.driver).send_keys(*keys).perform()

    def answer(self, key: str, expect_done: int | None = None) -> None:
        """Check the task shown (model HTML must be text), press ``key`` and wait until the vote is acknowledged."""
        self.check_text()
        expect = self.done() + 1 if expect_done is None else expect_done
        self.press(key)
        self.wait_for(
            lambda b: b.get_attribute("data-done") == str(expect) and b.get_attribute("data-state") != "busy"
        )

    def check_text(self) -> None:
        texts = [el.text for el in self.driver.find_elements("css selector", "#responses .text")]
        if any("window.pwned" in t for t in texts):
            assert sorted(texts) == sorted([SCRIPT, IMG]), texts  # shown as the text it is
            assert not self.driver.find_elements("css selector", "#responses script, #responses img")
            self.xss_seen += 1
        assert self.driver.execute_script("return typeof window.pwned") == "undefined"


@pytest.mark.slow  # ~8 s in the browser; `rlhfkit data agreement` then loads transformers (~15 s on 2 busy cores)
def test_two_labelers_by_keys_with_undo_and_a_server_killed_mid_vote(tmp_path, browser, label_process):
    write_comparisons(tmp_path / "c.jsonl", n=12)
    votes, port = tmp_path / "votes.jsonl", str(free_port())
    server = label_process(tmp_path / "c.jsonl", votes, "--overlap", "2", "--port", port)
    ann = Page(browser, server.base, "ann")
    assert ann.done() == 0 and "ann · 0 done · 12 left" in browser.find_element("id", "progress").text
    ann.answer("1")
    ann.press("w")  # a margin, then the side: stored with the vote
    ann.answer("2")
    for key in ("0", "1", "2"):
        ann.answer(key)
    assert ann.done() == 5
    undone_item = read_vote_rows(votes)[-1]["item_id"]
    ann.answer("u", expect_done=4)
    assert ann.body().get_attribute("data-item").startswith(undone_item)  # the undone item is asked again
    ann.answer("1", expect_done=5)

    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    ann.press("2")  # the page keeps the vote and retries until a server answers
    ann.wait_for(lambda b: "retrying" in b.find_element("id", "saving").text, timeout=10)
    server = label_process(tmp_path / "c.jsonl", votes, "--overlap", "2", "--port", port)
    ann.wait_for(lambda b: b.get_attribute("data-done") == "6" and b.get_attribute("data-state") == "ready")
    for key in ("0", "1", "2", "1"):
        ann.answer(key)

    bob = Page(browser, server.base, "bob")
    for key in "1201120112":
        bob.answer(key)
    assert bob.done() == 10 and ann.xss_seen + bob.xss_seen >= 1

    rows = read_vote_rows(votes)
    assert Counter(Counter(r["vote_id"] for r in rows).values()) == {1: len(rows)}  # no row written twice
    standing = read_vote_log(votes)
    assert Counter(v["labeler"] for v in standing) == {"ann": 10, "bob": 10}
    assert len(rows) == 22 and sum("undoes" in r for r in rows) == 1
    assert all(len({v["item_id"] for v in standing if v["labeler"] == who}) == 10 for who in ("ann", "bob"))
    assert any(v.get("margin") == "better" for v in standing)

    assert main(["data", "agreement", str(votes), "--json", str(tmp_path / "agreement.json")]) == 0
    report = json.loads((tmp_path / "agreement.json").read_text())
    left = {row["labeler"]: row["left_choice_rate"] for row in report["labelers"]}
    assert report["n_labelers"] == 2 and set(left) == {"ann", "bob"} and all(0 <= r <= 1 for r in left.values())
    assert report["data"]["rows"] == 20


def test_ranking_by_typed_numbers_and_ties(tmp_path, browser, label_process):
    write_comparisons(tmp_path / "c.jsonl", n=2, k=4)
    votes = tmp_path / "votes.jsonl"
    server = label_process(tmp_path / "c.jsonl", votes, "--mode", "ranking")
    page = Page(browser, server.base, "ann")
    shown = [el.text for el in browser.find_elements("css selector", "#responses .text")]
    page.press("3", "=", "1", "4")
    assert browser.find_element("id", "rank-text").text.split() == ["3", "=", "1", ">", "4"]
    page.answer("\ue007")  # Enter: response 2, left out, is last
    vote = read_vote_log(votes)[0]
    assert [[vote["responses"][i] for i in group] for group in vote["ranking"]] == [
        [shown[2], shown[0]],
        [shown[3]],
        [shown[1]],
    ]
    assert page.body().get_attribute("data-item") not in ("", f"{vote['item_id']}:null")  # the next item shows
