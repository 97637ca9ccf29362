"""edge-console in a real browser: Debian's chromium driven by Selenium, an emulated pylon camera streaming into
``edge-run``, an independent subscriber to check the page against, and the console with a users file (an
operator and a viewer). Screenshots of each view go to ``$CONSOLE_SCREENSHOTS`` (default: the test's folder).
The parts without a browser (users, review, estimates, refusals) are tested on their own first."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("starlette", reason="the console extra is not installed")
pytest.importorskip("argon2", reason="the console extra is not installed")

from calibration.run import calibrate, score_images  # noqa: E402
from edge.client import VerdictSubscriber  # noqa: E402
from edge.config import ConfigError  # noqa: E402
from edge.console.review import Rejects, Review, ReviewError  # noqa: E402
from edge.console.users import Users, hash_password  # noqa: E402
from edge.engines import open_engine  # noqa: E402
from edge.false_rejects import false_reject_at, recalibrated  # noqa: E402
from edge.sidecar import ScoreSpec  # noqa: E402
from tests.test_bridge import free_port  # noqa: E402
from tests.test_runtime import cli  # noqa: E402

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
HEARTBEAT_S = 0.5
PASSWORDS = {"alice": "alice-operator-1", "bob": "bob-viewer-1"}


def console_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from edge.console.cli import main; sys.exit(main(sys.argv[1:]))", *args]


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("users") / "users.toml"
    roles = {"alice": "operator", "bob": "viewer"}
    path.write_text(
        "".join(
            f'[users.{name}]\nrole = "{roles[name]}"\npassword = "{hash_password(password)}"\n'
            for name, password in PASSWORDS.items()
        )
    )
    return path


def test_users_file_checks_passwords_and_refuses_bad_files(users_file: Path, tmp_path: Path) -> None:
    users = Users(users_file)
    assert users.check("alice", PASSWORDS["alice"]).operator
    assert users.check("bob", PASSWORDS["bob"]).role == "viewer"
    assert users.check("alice", PASSWORDS["bob"]) is None and users.check("carol", "whatever") is None
    bad = tmp_path / "bad.toml"
    for text, problem in (
        ('[users.x]\nrole = "admin"\npassword = "$argon2id$x"\n', "role = one of viewer, operator"),
        ('[users.x]\nrole = "viewer"\npassword = "plain"\n', "an argon2 hash"),
        ("[people]\n", "give \\[users.NAME\\] tables"),
    ):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=problem):
            Users(bad)


def test_the_console_refuses_an_open_network_port_without_users_and_a_busy_port(users_file: Path) -> None:
    station = ["--station", "line=tcp://127.0.0.1:1"]
    open_port = subprocess.run(console_command(*station, "--listen", "0.0.0.0:8080"), capture_output=True, text=True)
    assert open_port.returncode == 2 and open_port.stderr.count("\n") == 1
    assert "without --users would let anyone on the network" in open_port.stderr
    with __import__("socket").socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        busy_port = console_command(*station, "--listen", f"127.0.0.1:{port}")
        taken = subprocess.run(busy_port, capture_output=True, text=True)
    assert taken.returncode == 2 and f"cannot serve on 127.0.0.1:{port}" in taken.stderr
    assert "Traceback" not in taken.stderr + open_port.stderr


def test_a_review_mark_copies_the_frame_and_re_calibration_is_estimated_with_the_calibration_code(
    tmp_path: Path,
) -> None:
    rejects = tmp_path / "rejects"
    rejects.mkdir()
    record = "2026-12-04T101010.000Z_00000007_0.900"
    (rejects / f"{record}.png").write_bytes(b"picture")
    (rejects / f"{record}.frame.png").write_bytes(b"frame")
    verdict = {"seq": 7, "run_id": "r", "frame_id": 7, "score": 0.9, "threshold": 0.5, "model": "sha256:ab"}
    (rejects / f"{record}.json").write_text(json.dumps(verdict))
    review = Review(tmp_path / "review")
    entry = review.mark("line3/cam1", Rejects(rejects), record, "defect", "alice")
    assert (tmp_path / "review" / "defect" / f"line3-cam1_{record}.png").read_bytes() == b"frame"
    review.mark("line3/cam1", Rejects(rejects), record, "good", "alice")  # changed mind: one folder only
    assert not (tmp_path / "review" / "defect" / f"line3-cam1_{record}.png").exists()
    assert (tmp_path / "review" / "good" / f"line3-cam1_{record}.png").is_file()
    assert entry["by"] == "alice" and len(review.marks("line3/cam1")) == 1
    assert len(review.false_rejects_since("line3/cam1", "sha256:ab", "2026-01-01T00:00:00+00:00")) == 1
    assert review.false_rejects_since("line3/cam1", "sha256:ab", "2999-01-01T00:00:00+00:00") == []
    with pytest.raises(ReviewError, match="is not in"):
        review.mark("line3/cam1", Rejects(rejects), "../../etc/passwd", "good", "alice")
    with pytest.raises(ReviewError, match="use one of good, defect"):
        review.mark("line3/cam1", Rejects(rejects), record, "maybe", "alice")
    # the estimate: false rejects marked good above the threshold raise it, and the current one rejects more
    from edge.false_rejects import false_reject_threshold

    score = ScoreSpec("probability")
    good = np.random.default_rng(0).beta(2, 8, 200)
    calibration = {**false_reject_threshold(good, 0.01, np.random.default_rng(0), score), "good_scores": list(good)}
    assert false_reject_at(calibration, score, calibration["threshold"]) == pytest.approx(0.01, rel=0.05)
    assert false_reject_at(calibration, score, 0.0) == 1.0  # below the tail: the share of good scores
    estimate = recalibrated(calibration, score, [calibration["threshold"] * 1.1] * 6)
    assert estimate["threshold"] > calibration["threshold"] and estimate["current_false_reject"] > 0.01
    assert estimate["good_images"] == 206


# -- the browser ----------------------------------------------------------------------------------------------


@pytest.fixture
def browser():
    """A headless chromium (Debian's) through its chromedriver."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,1400")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def wait_for(condition, timeout_s: float = 30.0, what: str = "the page"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:  # an element replaced while the page redraws: look again
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout_s:.0f} s")


class Subscriber(threading.Thread):
    """An independent subscriber: every verdict and status message of the station, in another thread."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.subscriber = VerdictSubscriber(endpoint, "line1")
        self.verdicts: list[dict] = []
        self.statuses: list[dict] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for kind, payload in self.subscriber.poll(0.1):
                (self.verdicts if kind == "verdict" else self.statuses if kind == "status" else []).append(payload)
        self.subscriber.close()

    def counts(self) -> dict:
        return {kind: sum(v["verdict"] == kind for v in self.verdicts) for kind in ("pass", "fail", "error")}


def test_the_console_in_a_browser_shows_the_line_and_lets_an_operator_review_and_steer_it(
    browser, onnx_engine: Path, brick_dataset: Path, users_file: Path, tmp_path: Path
) -> None:
    pytest.importorskip("pypylon.pylon", reason="pypylon is not installed (pip install pypylon)")
    shots = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    engine = tmp_path / "engine" / onnx_engine.name
    engine.parent.mkdir()
    for suffix in ("", ".json"):
        shutil.copy(f"{onnx_engine}{suffix}", f"{engine}{suffix}")
    good = tmp_path / "good"  # the good images and their mirror images: 36, enough for 10 % false rejects
    good.mkdir()
    for path in sorted((brick_dataset / "train" / "good").glob("*.png")):
        image = cv2.imread(str(path))
        for flip, picture in (("", image), ("h", image[:, ::-1]), ("v", image[::-1])):
            cv2.imwrite(str(good / f"{path.stem}{flip}.png"), picture)
    calibrate(engine, good, target=0.1)  # the page shows its good scores
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted((brick_dataset / "test").rglob("*.png")):
        shutil.copy(path, images / f"{path.parent.name}_{path.name}")
    with open_engine(engine) as opened:
        scores = sorted(score_images(opened, images).scores)
    threshold = float(scores[len(scores) // 2])  # about half the parts fail: rejects to review
    ports = [free_port() for _ in range(4)]
    publish, snapshot, control = (f"tcp://127.0.0.1:{port}" for port in ports[:3])
    station = subprocess.Popen(
        [
            *cli("run_main"), "--engine", str(engine), "--camera", "basler0", "--trigger", "software", "--fps", "6",
            "--emulator-images", str(images), "--station", "line1", "--publish", publish, "--snapshot", snapshot,
            "--control", control, "--rejects", str(tmp_path / "rejects"), "--threshold", str(threshold),
            "--heartbeat-s", str(HEARTBEAT_S), "--wait-subscribers", "0",
        ],
        stderr=subprocess.DEVNULL, env={**os.environ, "PYLON_CAMEMU": "1"},
    )  # fmt: skip
    subscriber = Subscriber(publish)
    subscriber.start()
    url = f"http://127.0.0.1:{ports[3]}/"
    console = subprocess.Popen(
        console_command(
            "--station", f"line1={publish}", "--snapshot", f"line1={snapshot}", "--control", f"line1={control}",
            "--rejects", f"line1={tmp_path / 'rejects'}", "--review", str(tmp_path / "review"),
            "--users", str(users_file), "--listen", f"127.0.0.1:{ports[3]}",
        ),
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _operate(browser, url, shots, station, subscriber, threshold, tmp_path)
    finally:
        for process in (station, console):
            if process.poll() is None:
                process.terminate()
        station.wait(timeout=20)
        console.wait(timeout=20)
        subscriber.stop.set()
    log = console.stderr.read()
    assert "log-in refused for 'alice'" in log and log.count("log-in refused") == 1 and "Traceback" not in log


def _operate(browser, url: str, shots: Path, station, subscriber: Subscriber, threshold: float, tmp: Path) -> None:
    from selenium.webdriver.common.by import By

    def element(id_: str):
        return browser.find_element(By.ID, id_)

    def login(user: str, password: str) -> None:
        browser.delete_all_cookies()
        browser.get(url)
        wait_for(lambda: element("login").is_displayed(), what="the log-in form")
        element("login-user").clear()
        element("login-user").send_keys(user)
        element("login-password").send_keys(password)
        element("login-submit").click()

    wait_for(lambda: subscriber.verdicts, 60, "the station's first verdict")
    login("alice", "not her password")  # one line in the console's log, an error on the page
    wait_for(lambda: "wrong user name or password" in element("login-error").text, what="the refusal")
    login("alice", PASSWORDS["alice"])
    card = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, '.card[data-station="line1"]'), what="fleet")
    wait_for(lambda: "running" in card.text, what="the station running on the fleet view")
    browser.save_screenshot(str(shots / "console-fleet.png"))
    card.click()
    # live: the preview frame changes, the verdict is shown
    first = wait_for(lambda: element("preview").get_attribute("src"), what="a preview")
    wait_for(lambda: element("preview").get_attribute("src") != first, what="the next preview")
    assert browser.execute_script("return document.getElementById('preview').naturalWidth") > 0
    assert element("verdict").text in ("PASS", "FAIL") or element("verdict").text.startswith("ERROR")
    # a reject in the gallery; marked good, its frame lands in review/good/
    thumb = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "#gallery .thumb"), 60, "a reject")
    record = thumb.get_attribute("data-record")
    wait_for(lambda: "Review" in element("review-panel").text and element("review-summary").text, what="review")
    browser.save_screenshot(str(shots / "console-station.png"))
    browser.execute_script("arguments[0].click()", thumb)
    wait_for(lambda: element("reject-dialog").is_displayed(), what="the reject's picture")
    wait_for(lambda: browser.execute_script("return document.getElementById('reject-picture').naturalWidth"))
    browser.save_screenshot(str(shots / "console-reject.png"))
    element("mark-good").click()
    wait_for(lambda: "marked good" in element("mark-answer").text, what="the mark")
    assert (tmp / "review" / "good" / f"line1_{record}.png").is_file()
    element("close-dialog").click()
    wait_for(lambda: "1 false reject(s) marked" in element("review-summary").text, 20, "the marked count")
    wait_for(lambda: "Re-calibrating with them" in element("recalibration").text, 20, "the estimate")
    # the operator's threshold change reaches the station: its status topic names alice
    new = round(threshold * 1.05, 6)
    element("threshold-input").clear()
    element("threshold-input").send_keys(str(new))
    wait_for(lambda: "expected false rejects at" in element("threshold-fr").text, what="the expected FR")
    element("set-threshold").click()
    changed = wait_for(
        lambda: [s for s in subscriber.statuses if (s.get("control") or {}).get("command") == "set_threshold"],
        what="the station's status",
    )
    assert changed[0]["control"]["by"].startswith("alice via") and changed[0]["control"]["thresholds"]["score"] == new
    wait_for(lambda: "set_threshold by alice" in element("change").text, what="who changed it")
    browser.save_screenshot(str(shots / "console-controls.png"))
    # a viewer sees it all, may change nothing: the station is asked nothing
    login("bob", PASSWORDS["bob"])
    browser.get(url + "#/station/line1")
    wait_for(lambda: element("count-pass").text, what="the viewer's page")
    assert not element("set-threshold").is_enabled() and not element("mark-good").is_enabled()
    answer = browser.execute_async_script(
        """const done = arguments[arguments.length - 1];
        fetch('/api/session').then(r => r.json()).then(s => fetch('/api/control', {method: 'POST',
          headers: {'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf},
          body: JSON.stringify({station: 'line1', command: 'set_threshold', score: 0.01})}))
          .then(r => r.json().then(body => done([r.status, body])));"""
    )
    assert answer[0] == 403 and "bob is a viewer" in answer[1]["error"]
    no_csrf = browser.execute_async_script(
        """const done = arguments[arguments.length - 1];
        fetch('/api/control', {method: 'POST', headers: {'Content-Type': 'application/json'},
          body: JSON.stringify({station: 'line1', command: 'pause'})}).then(r => done(r.status));"""
    )
    assert no_csrf == 403
    browser.save_screenshot(str(shots / "console-viewer.png"))
    # counters match the independent subscriber's; the station killed → offline within 3 heartbeats
    station.send_signal(signal.SIGKILL)
    station.wait(timeout=10)
    killed = time.monotonic()
    wait_for(lambda: element("state").text == "offline", 10, "offline")
    shown_after = time.monotonic() - killed
    assert shown_after < 3 * HEARTBEAT_S + 1.5, shown_after  # 3 heartbeats, the page's half-second update, slack
    time.sleep(0.6)
    shown = {kind: int(element(f"count-{kind}").text) for kind in ("pass", "fail", "error")}
    assert shown == subscriber.counts() and sum(shown.values()) == len(subscriber.verdicts) > 0
    assert len([s for s in subscriber.statuses if (s.get("control") or {}).get("command") == "set_threshold"]) == 1
    browser.save_screenshot(str(shots / "console-offline.png"))
