"""The Gradio page of `crjepa app` (crjepa/app/ui.py): problems become messages in the page, the page has what the
archive and model allow, a missing Gradio is one line, and the whole app works in a real headless Chromium as a
person uses it (the README's command after the quick start)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from crjepa.app.engine import Explorer, Filter
from crjepa.hub.archive import load_embeddings

from helpers import REPO, free_port, offline_env, run_python, synthetic_pairs, wait_for, write_app_archive

APT_COMMAND = "apt-get update && apt-get install -y chromium chromium-driver"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def archive_dir(tmp_path_factory, model) -> Path:
    return write_app_archive(tmp_path_factory.mktemp("app-ui") / "emb", model, synthetic_pairs({"test": 24}), 24)


def test_problems_become_a_message_in_the_page_never_a_traceback(archive_dir):
    from crjepa.app.ui import _run

    explorer = Explorer(load_embeddings(archive_dir))
    message, html = _run(lambda: explorer.search_id("no-such-id"), Filter())
    assert message.startswith("**⚠ Unknown id 'no-such-id'") and 'data-rows="0"' in html
    message, html = _run(
        lambda: explorer.search_id(
            explorer.archive.ids[0], where=Filter(labels=("Pastures",), field="row", value="99..")
        ),
        Filter(),
    )
    assert "No archive item passes the filter" in message and 'data-rows="0"' in html

    def bug() -> list:
        raise ZeroDivisionError("division by zero")

    message, html = _run(bug, Filter())
    assert (
        message
        == (
            "**⚠ The search failed on the server (ZeroDivisionError: division by zero); the details are "
            "in the server log**"
        )
        and "Traceback" not in message + html
    )
    message, html = _run(lambda: explorer.search_id(explorer.archive.ids[0], "s1->s2", 3), Filter(labels=("x",)))
    assert message == "Results (s1->s2: 3) · filter: labels 'x'" and html.count('data-relevant="') == 4


def test_the_page_offers_search_by_image_only_with_the_model(archive_dir, model):
    from crjepa.app.ui import build_app

    def ids(explorer: Explorer) -> set[str]:
        return {block.elem_id for block in build_app(explorer).blocks.values() if block.elem_id}

    archive = load_embeddings(archive_dir)
    with_model = ids(Explorer(archive, model=model))
    assert {
        "crjepa-id",
        "crjepa-direction",
        "crjepa-search-id",
        "crjepa-upload",
        "crjepa-search-image",
        "crjepa-labels",
        "crjepa-k",
        "crjepa-message",
        "crjepa-results",
        "crjepa-facts",
    } <= with_model
    without = ids(Explorer(archive))
    assert "crjepa-no-model" in without and "crjepa-upload" not in without
    assert "crjepa-scores" not in without  # no results.json, no model card: no plot


def test_without_gradio_the_command_is_one_line_naming_the_install(archive_dir, tmp_path, monkeypatch, capsys):
    from crjepa.cli import main

    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` fails as if it were not installed
    for argv in (["app", str(archive_dir)], ["app", str(archive_dir), "--export-space", str(tmp_path / "space")]):
        assert main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert (
            len(lines) == 1
            and lines[0].startswith("crjepa app: error: the app needs Gradio")
            and lines[0].endswith('pip install "crjepa[app]"')
        ), lines
    assert not (tmp_path / "space").exists()


def test_a_port_in_use_is_one_line(archive_dir, capsys):
    import socket

    from crjepa.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["app", str(archive_dir), "--host", "127.0.0.1", "--port", str(port)]) == 2
    error = capsys.readouterr().err.strip()
    assert (
        error.startswith(f"crjepa app: error: cannot serve on 127.0.0.1:{port} (")
        and error.endswith("choose another --port or --host")
        and len(error.splitlines()) == 1
    )


# ---------------------------------------------------------------------------------------------- the browser
def readme_app_command() -> list[str]:
    """The command README.md's app section documents (the line after its install)."""
    text = (REPO / "README.md").read_text()
    section = text.split("## See the results: the app", 1)[1].split("\n## ", 1)[0]
    line = next(line.strip() for line in section.splitlines() if line.startswith("    ") and "crjepa app " in line)
    return shlex.split(line.split(" && ", 1)[1])


def chrome(user_data_dir: Path):
    """A headless system Chromium driven through the system chromedriver; a missing browser FAILS the test."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail(
            f"the app's browser test needs Chromium and chromedriver from Debian: {APT_COMMAND} "
            "(or bash .ci/browser-deps)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", "--window-size=1400,1300"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def start_app(argv: list[str], cwd: Path, **env: str) -> tuple[subprocess.Popen, str, list[str]]:
    """Start the app; wait for its 'serving ... at URL' line (an event on the pipe, however long loading takes).
    Returns the process, the URL and the list its further output is drained into."""
    proc = subprocess.Popen(
        argv, cwd=cwd, env=offline_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("crjepa app: serving "):
            url = line.rsplit(" at ", 1)[1].strip()
            threading.Thread(target=lambda: seen.extend(proc.stdout), daemon=True).start()
            return proc, url, seen
    proc.wait()
    pytest.fail(f"the app stopped before serving (exit {proc.returncode}):\n{''.join(seen)[-3000:]}")


class Serving:
    """`wait_for`'s process for a server running in this process: alive while the Blocks serve."""

    def __init__(self, demo) -> None:
        self.demo, self.returncode = demo, None

    def poll(self) -> int | None:
        return None if self.demo.is_running else 1


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def zip_patch(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for file in sorted(folder.iterdir()):
            archive.write(file, f"{folder.name}/{file.name}")
    return target


@pytest.mark.slow
def test_the_app_in_a_real_browser_by_id_and_by_upload(tmp_path, ben_v1_dirs):
    """The quick start's run (a few steps), then README's `crjepa app` command on a free port of 127.0.0.1, opened in
    headless Chromium: a search by id picked from the search-as-you-type list, an unknown id and a wrong band count
    (messages, the page lives on), a search by an uploaded real BigEarthNet patch folder (.zip). Tiles, scores,
    labels and relevance marks are checked against the archive; a screenshot is kept (its path is printed)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    train = run_python(
        [
            str(REPO / "train_accelerate.py"),
            "--training.max_steps",
            "6",
            "--logging.report_to",
            "none",
            "--logging.progress_bar",
            "false",
            "--data.options",
            "{num_train: 128, num_validation: 0, num_test: 64, image_size: 32, seed: 0}",
        ],
        tmp_path,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    command = readme_app_command()
    assert command[0] == "crjepa"
    port = free_port()
    proc, url, output = start_app(
        [sys.executable, "-m", "crjepa.cli", *command[1:], "--host", "127.0.0.1", "--port", str(port)],
        tmp_path,
        GRADIO_TEMP_DIR=str(tmp_path / "gradio"),
    )
    archive = load_embeddings(tmp_path / command[2])
    driver = chrome(Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)))
    started = time.perf_counter()
    try:
        assert url == f"http://127.0.0.1:{port}/"
        driver.get(url)

        def until(condition, what: str) -> None:  # no deadline of its own; fails at once if the app exits
            wait_for(lambda: bool(condition()), proc, what)

        def find(selector: str) -> list:
            return driver.find_elements(By.CSS_SELECTOR, selector)

        def message() -> str:
            return driver.find_element(By.ID, "crjepa-message").text

        def tab(name: str) -> None:
            next(b for b in find("button[role=tab]") if b.text.strip() == name).click()

        def check_tiles(query_id: str | None, directions: list[str], k: int) -> None:
            rows = find("section.crjepa-row")
            assert [r.get_attribute("data-direction") for r in rows] == directions
            query_labels = archive.labels[archive.position(query_id)] if query_id else None
            for row in rows:
                tiles = row.find_elements(By.CSS_SELECTOR, "figure.crjepa-tile:not(.crjepa-query)")
                assert len(tiles) == k
                for tile in tiles:
                    item = tile.get_attribute("data-id")
                    labels = [s.get_attribute("title") for s in tile.find_elements(By.CSS_SELECTOR, ".crjepa-label")]
                    position = archive.position(item)
                    assert labels == [archive.class_names[c] for c in np.flatnonzero(archive.labels[position])]
                    assert tile.find_element(By.TAG_NAME, "img").get_attribute("src").startswith("data:image/png")
                    relevant = (
                        "unknown"
                        if query_labels is None
                        else str(bool((archive.labels[position] & query_labels).any())).lower()
                    )
                    assert tile.get_attribute("data-relevant") == relevant
                    mark = tile.find_element(By.CSS_SELECTOR, ".crjepa-mark").text
                    assert (
                        mark
                        == {"true": "✓ relevant", "false": "✗ not relevant", "unknown": "no query labels"}[relevant]
                    )

        # the page opens with the first id's results, and the archive's facts and scores
        until(lambda: find("figure.crjepa-tile:not(.crjepa-query)"), "the first results show")
        facts = driver.find_element(By.ID, "crjepa-facts").text
        assert "Recall promise" in facts and "synthetic (test split): 64 items" in facts
        assert len(find("#crjepa-scores rect[data-model='trained']")) == 4  # results.json of the run

        # 1. by id: type part of an id, pick it from the suggestions
        wanted = archive.ids[42]
        box = driver.find_element(By.CSS_SELECTOR, "#crjepa-id input")
        box.click()
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(wanted[-8:])
        option = f'#crjepa-id li[aria-label="{wanted}"]'
        until(
            lambda: find(option) and all(wanted[-8:] in o.get_attribute("aria-label") for o in find("#crjepa-id li")),
            "the id list narrows to the typed text",
        )
        find(option)[0].click()
        until(lambda: find(f'figure.crjepa-query[data-id="{wanted}"]'), "the picked id's results show")
        assert message() == "Results (s1->s1: 5, s2->s2: 5, s1->s2: 5, s2->s1: 5)"
        check_tiles(wanted, ["s1->s1", "s2->s2", "s1->s2", "s2->s1"], 5)
        height = driver.execute_script(
            "return Math.max(document.body.scrollHeight, "
            "document.documentElement.scrollHeight, "
            "document.querySelector('.gradio-container').scrollHeight)"
        )
        driver.set_window_size(1400, height + 160)  # the whole page in one picture
        screenshot = tmp_path / "crjepa-app.png"
        driver.save_screenshot(str(screenshot))
        print(f"\nscreenshot of the app: {screenshot}")

        # 2. an unknown id: a message, no results, the page lives on
        box = driver.find_element(By.CSS_SELECTOR, "#crjepa-id input")
        box.click()
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys("no-such-patch", Keys.ENTER)
        driver.find_element(By.ID, "crjepa-search-id").click()
        until(lambda: "Unknown id 'no-such-patch'" in message(), "the unknown id's message shows")
        assert not find("figure.crjepa-tile")

        # 3. by upload: a wrong band count, then a real BigEarthNet S2 patch folder as .zip
        tab("By image")
        upload = driver.find_element(By.CSS_SELECTOR, "#crjepa-upload input[type=file]")
        np.save(tmp_path / "rgb.npy", np.zeros((3, 32, 32), np.uint8))
        upload.send_keys(str(tmp_path / "rgb.npy"))
        until(lambda: find('#crjepa-upload td.filename[aria-label="rgb.npy"]'), "rgb.npy is uploaded")
        driver.find_element(By.ID, "crjepa-search-image").click()
        until(lambda: "rgb.npy has 3 band(s)" in message(), "the band count message shows")
        assert "wrong band count" in message()
        driver.find_element(By.CSS_SELECTOR, "#crjepa-upload button[aria-label=Clear]").click()
        patch = zip_patch(sorted(p for p in ben_v1_dirs[1].iterdir() if p.is_dir())[0], tmp_path / "s2-patch.zip")
        driver.find_element(By.CSS_SELECTOR, "#crjepa-upload input[type=file]").send_keys(str(patch))
        until(lambda: find('#crjepa-upload td.filename[aria-label="s2-patch.zip"]'), "the patch zip is uploaded")
        driver.find_element(By.ID, "crjepa-search-image").click()
        until(lambda: find('figure.crjepa-query[data-id="s2-patch.zip"]'), "the upload's results show")
        assert message() == "Results (s2->s2: 5, s2->s1: 5)"
        check_tiles(None, ["s2->s2", "s2->s1"], 5)
        assert find("figure.crjepa-query img")  # the uploaded patch, rendered in true colour
        print(f"browser part of the test: {time.perf_counter() - started:.1f} s")
    finally:
        driver.quit()
        stop(proc)
    assert "Traceback" not in "".join(output), "".join(output)[-3000:]


@pytest.mark.slow
def test_a_large_archive_gets_a_search_box_the_server_matches(archive_dir, model, tmp_path):
    """Past ID_CHOICES_LIMIT ids the page gets a search box; the server's matches of the latest text fill the id
    list (typed at machine speed: the last keystroke wins) and the first match is searched."""
    from selenium.webdriver.common.by import By

    from crjepa.app.render import CSS
    from crjepa.app.ui import build_app

    explorer = Explorer(load_embeddings(archive_dir), model=model)
    demo = build_app(explorer, id_choices_limit=10)  # 24 ids: more than the page is sent
    _, url, _ = demo.launch(
        server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, css=CSS
    )
    driver = chrome(tmp_path / "chromium")
    try:
        driver.get(url)
        serving = Serving(demo)

        def until(condition, what: str) -> None:
            wait_for(lambda: bool(condition()), serving, what)

        until(lambda: driver.find_elements(By.CSS_SELECTOR, "figure.crjepa-tile:not(.crjepa-query)"), "results show")
        wanted = explorer.archive.ids[17]
        driver.find_element(By.CSS_SELECTOR, "#crjepa-id-search textarea").send_keys(wanted[-6:])
        picked = driver.find_element(By.CSS_SELECTOR, "#crjepa-id input")
        until(lambda: picked.get_attribute("value") == wanted, "the server's first match is picked")
        driver.find_element(By.ID, "crjepa-search-id").click()
        until(
            lambda: driver.find_elements(By.CSS_SELECTOR, f'figure.crjepa-query[data-id="{wanted}"]'),
            "its results show",
        )
        assert len(driver.find_elements(By.CSS_SELECTOR, "figure.crjepa-tile:not(.crjepa-query)")) == 4 * 5
    finally:
        driver.quit()
        demo.close()
