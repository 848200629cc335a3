"""The Gradio Space end to end, in a real headless Chromium: the app is started as a user would start it
(`python app.py --port N` inside spaces_demo/), the example clip and its thermal clip are uploaded through the page,
the answer is read from the page and must be crema-tiny's right answer; then a broken upload must give a readable
one-line error in the page. Skipped only when Chromium is not installed (`apt-get install chromium
chromium-driver`); no browser is ever downloaded (Playwright drives /usr/bin/chromium)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from served_space import free_port, served_space

REPO = Path(__file__).resolve().parents[1]
SPACE = REPO / "spaces_demo"
EXAMPLE = json.loads((REPO / "examples" / "example.json").read_text())
CHROMIUM = os.environ.get("CREMA_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
#: Chromium in a closed network: without the background-networking flags its own connections are refused.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ANSWER_TIMEOUT_MS = 180_000  # the first answer also loads the pipeline (torch, remote code)

pytestmark = pytest.mark.skipif(
    not os.path.isfile(CHROMIUM) and not os.environ.get("CREMA_REQUIRE_BROWSER"),  # CI sets it: never skipped there
    reason="Chromium is not installed: apt-get install chromium chromium-driver (the browser test drives "
    "/usr/bin/chromium; set CREMA_CHROMIUM to use another binary)",
)


@pytest.fixture
def space_url(tmp_path):
    """The Space started from inside spaces_demo/ on a free port, stopped (by its own pid) afterwards."""
    port, log = free_port(), tmp_path / "app.log"
    with served_space(["app.py", "--port", str(port)], SPACE, port, log) as url:
        yield url
    print(f"app log (last lines):\n{log.read_text()[-2000:]}")


def replace_upload(page, elem_id: str, path: Path) -> None:
    """Clears a (preloaded) upload component, if it holds a file, and uploads `path` through its file input."""
    component = page.locator(f"#{elem_id}")
    clear = component.locator("button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
    file_input = component.locator("input[type=file]")
    file_input.wait_for(state="attached")
    file_input.set_input_files(str(path))
    # the upload is done when the component shows the file again (the Clear button is back)
    clear.first.wait_for(state="visible", timeout=30_000)


def save_screenshot(page, tmp_path: Path, name: str) -> None:
    """Into the test's tmp_path, and into $CREMA_SCREENSHOT_DIR when it is set."""
    page.screenshot(path=str(tmp_path / name), full_page=True)
    if os.environ.get("CREMA_SCREENSHOT_DIR"):
        target = Path(os.environ["CREMA_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / name, target / name)


def test_space_answers_the_example_and_reports_a_bad_file(space_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    bad = tmp_path / "not-a-video.mp4"
    bad.write_text("this is a text file, not a video\n")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000},
        )
        try:
            page = context.new_page()
            page.goto(space_url)
            page.locator("#ask").wait_for(timeout=60_000)

            # what a visitor does: upload the clip and its thermal render, type the question and the options
            replace_upload(page, "video-input", SPACE / "examples" / EXAMPLE["clip"])
            replace_upload(page, "thermal-input", SPACE / "examples" / EXAMPLE["thermal"])
            page.locator("#question textarea").fill(EXAMPLE["question"])
            page.locator("#options textarea").fill("\n".join(EXAMPLE["options"]))
            page.locator("#ask").click()

            answer = page.locator("#answer textarea")
            expect(answer).not_to_have_value("", timeout=ANSWER_TIMEOUT_MS)
            assert answer.input_value() == EXAMPLE["answer"]  # crema-tiny's answer needs the thermal clip
            details = page.locator("#details")
            expect(details).to_contain_text("thermal")  # the modalities used are listed
            expect(page.locator("#frames img").first).to_be_visible()  # the frames the model read
            save_screenshot(page, tmp_path, "space-answer.png")

            # a text file named .mp4: the page says what is wrong with it, in one line, without a traceback
            replace_upload(page, "video-input", bad)
            page.locator("#ask").click()
            toast = page.locator(".toast-body").filter(has_text=bad.name)
            expect(toast).to_be_visible(timeout=60_000)
            message = toast.inner_text()
            assert "Traceback" not in message and "File \"" not in message
            assert "/tmp/gradio" not in message  # the upload's temp path is shortened to the file's name
            save_screenshot(page, tmp_path, "space-bad-file.png")
        finally:
            context.close()
