"""The labelling app in a real browser (headless Chromium driven by Selenium through chromedriver).

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and the
``[label]`` extra; skipped without them.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tdm_r1.testing import trainkit
from tdm_r1.testing.browser import BROWSER_SKIP_REASON, chromedriver, chromium_binary
from tdm_r1.testing.labelkit import make_db

pytest.importorskip("fastapi")
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tdm_r1.label.app import BackgroundServer, create_app  # noqa: E402
from tdm_r1.label.db import LabelDB  # noqa: E402

#: Where the browser and its driver are, found once at import: the decision to skip is taken here,
#: in the main thread, before any server or rater thread starts (a ``pytest.skip`` raised inside a
#: thread only kills that thread and would leave the test waiting for its labels).
DRIVER = chromedriver()
BINARY = chromium_binary()
pytestmark = [
    pytest.mark.skipif(
        not (DRIVER and BINARY),
        reason=f"{BROWSER_SKIP_REASON} (chromedriver {DRIVER or 'missing'}, chromium {BINARY or 'missing'})",
    ),
    pytest.mark.browser,
]


def chrome() -> Any:
    """A headless Chromium session (the module is skipped when the browser or its driver is missing)."""
    opts = webdriver.ChromeOptions()
    opts.binary_location = BINARY
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--disable-background-networking",
        "--no-first-run",
    ):
        opts.add_argument(arg)
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=DRIVER))


@pytest.fixture
def browser():
    d = chrome()
    yield d
    d.quit()


def _classes(d: Any, k: int) -> str:
    return d.find_element(By.ID, f"cell-{k}").get_attribute("class")


def _wait(d: Any, cond: Any, what: str) -> None:
    WebDriverWait(d, 20, poll_frequency=0.05).until(lambda d: cond(d), message=what)


def _log_in(d: Any, url: str, name: str) -> None:
    d.get(url + "/")
    d.find_element(By.ID, "name").send_keys(name)
    d.find_element(By.ID, "start").click()


def test_label_a_group_with_clicks_and_keys_then_undo(browser: Any, tmp_path: Path) -> None:
    db = make_db(
        tmp_path / "likes.sqlite", {"a red circle above a blue square": 4, "three green triangles": 2}
    )
    d = browser
    with BackgroundServer(create_app(LabelDB(db.path))) as server:
        _log_in(d, server.url, "ann")
        _wait(d, lambda d: "/group/" in d.current_url, "the first group opens")
        assert d.find_element(By.ID, "prompt").text == "a red circle above a blue square"
        assert "three green triangles" in d.find_element(By.ID, "pending-list").text
        ids = [d.find_element(By.ID, f"cell-{k}").get_attribute("data-image") for k in range(4)]
        d.find_element(By.CSS_SELECTOR, "#cell-0 .like").click()
        _wait(d, lambda d: "liked" in _classes(d, 0), "click like")
        d.find_element(By.CSS_SELECTOR, "#cell-1 .dislike").click()
        _wait(d, lambda d: "disliked" in _classes(d, 1), "click dislike")
        keys = ActionChains(d)
        keys.send_keys("l").perform()  # focus moved on to the first unlabelled image: #2
        _wait(d, lambda d: "liked" in _classes(d, 2), "key L")
        keys.send_keys("d").perform()
        _wait(d, lambda d: "disliked" in _classes(d, 3), "key D")
        assert d.find_element(By.ID, "progress").text == "4 of 4 labelled"
        keys.send_keys("u").perform()  # undo the last label (#3)
        _wait(d, lambda d: "disliked" not in _classes(d, 3), "key U undoes")
        assert d.find_element(By.ID, "progress").text == "3 of 4 labelled"
        keys.send_keys(Keys.ARROW_LEFT).send_keys("d").perform()  # relabel #2: like -> dislike
        _wait(d, lambda d: "disliked" in _classes(d, 2), "relabel by keys")
        d.find_element(By.ID, "undo").click()  # and undo by the button: #2 is cleared
        _wait(d, lambda d: "disliked" not in _classes(d, 2), "undo button")
        d.refresh()  # what the page shows after a reload comes from the database
        _wait(d, lambda d: d.find_element(By.ID, "progress").text == "2 of 4 labelled", "reload")
        assert "liked" in _classes(d, 0) and "disliked" in _classes(d, 1)
    rows = sqlite3.connect(db.path).execute(
        "SELECT image_id, rater, label, supersedes, id FROM labels ORDER BY id"
    )
    rows = [(ids.index(i), r, lab, sup) for i, r, lab, sup, _ in rows]
    assert rows == [
        (0, "ann", 1, None),
        (1, "ann", 0, None),
        (2, "ann", 1, None),
        (3, "ann", 0, None),
        (3, "ann", None, 4),  # undo: a clearing row that supersedes row 4
        (2, "ann", 0, 3),  # relabel: supersedes the like (row 3), which stays
        (2, "ann", None, 6),
    ]
    rates = db.rates(ids)
    assert [rates[i].rate for i in ids[:2]] == [1.0, 0.0] and rates[ids[2]].raters == rates[
        ids[3]
    ].raters == 0


class _BrowserRater(threading.Thread):
    """Clicks through the page: like the images at even positions, dislike the others."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.groups, self.error = url, threading.Event(), 0, None
        self.driver = chrome()  # in the caller's thread: a browser that cannot start fails the test there

    def run(self) -> None:
        d = self.driver
        try:
            _log_in(d, self.url, "browser")
            while not self.stop.is_set():
                if "/group/" not in d.current_url:
                    time.sleep(0.1)
                    d.get(self.url + "/")
                    continue
                cells = d.find_elements(By.CSS_SELECTOR, ".cell")
                for k in range(len(cells)):
                    if "liked" not in _classes(d, k):  # "liked" also matches "disliked"
                        d.find_element(
                            By.CSS_SELECTOR, f"#cell-{k} .{'like' if k % 2 == 0 else 'dislike'}"
                        ).click()
                        _wait(d, lambda d, k=k: "liked" in _classes(d, k), "label shown")
                self.groups += 1
                d.get(self.url + "/")
        except Exception as exc:  # noqa: BLE001 (reported by the test)
            self.error = exc
        finally:
            d.quit()


def test_reward_waits_for_a_rater_clicking_in_the_browser(tmp_path: Path) -> None:
    """Fast variant of the online loop: a trainer-like loop of two epochs calls the reward (which
    blocks), a browser labels the groups, advantages come from the clicks."""
    import torch

    from tdm_r1.losses.advantages import group_advantages
    from tdm_r1.rewards.base import build_reward

    dbp = tmp_path / "likes.sqlite"
    reward = build_reward(
        {"likes": 1.0}, options={"likes": {"db": str(dbp), "policy": "wait", "max_wait": 120.0}}
    )
    prompts = ["a red circle"] * 4 + ["two blue squares"] * 4
    with BackgroundServer(create_app(LabelDB(dbp))) as server:
        rater = _BrowserRater(server.url)
        rater.start()
        try:
            for epoch in range(2):
                images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(epoch))
                out = reward(images=images, prompts=prompts, metadata=[{}] * 8)
                assert out.scores.tolist() == [1.0, 0.0] * 4  # even positions liked, in page order
                adv = group_advantages(out.scores, torch.tensor([0] * 4 + [1] * 4), std="group")
                assert torch.equal(adv.values > 0, out.scores > 0.5) and adv.nan_rewards == 0
        finally:
            rater.stop.set()
            rater.join(timeout=60)
    assert rater.error is None, rater.error
    assert LabelDB(dbp).stats()["labels"] == 16


@pytest.mark.slow
def test_training_waits_for_a_rater_clicking_in_the_browser(registered: Path, tmp_path: Path) -> None:
    """The online loop end to end: the trainer's rollouts appear on the page, the trainer waits,
    a browser labels them, and the rewards the trainer learns from are those clicks (2 epochs)."""
    from tdm_r1.train.trainer import Trainer

    dbp = tmp_path / "likes.sqlite"
    cfg = trainkit.small_config(
        tmp_path,
        rewards={"likes": 1.0},
        reward_options={"likes": {"db": str(dbp), "policy": "wait", "run": "t", "max_wait": 300.0}},
    )
    trainer = Trainer(cfg)
    trainer.setup()  # creates the database: the app can open it
    with BackgroundServer(create_app(LabelDB(dbp))) as server:
        rater = _BrowserRater(server.url)
        rater.start()
        try:
            trainer.fit()
        finally:
            rater.stop.set()
            rater.join(timeout=60)
    assert rater.error is None, rater.error
    assert [h["epoch"] for h in trainer.history] == [1, 2]
    for h in trainer.history:
        assert h["nan_rewards"] == 0 and h["reward_mean"] == pytest.approx(0.5)
    con = sqlite3.connect(dbp)
    n = cfg.samples_per_epoch * 2
    assert con.execute(
        "SELECT count(*), count(DISTINCT image_id) FROM labels WHERE rater = 'browser'"
    ).fetchone() == (n, n)
    assert {s for (s,) in con.execute("SELECT DISTINCT status FROM groups")} == {"done"}
    assert LabelDB(dbp).stats()["labels"] == n and rater.groups >= 2
