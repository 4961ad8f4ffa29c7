"""The gallery in a real browser: Debian's headless Chromium, driven through its chromedriver (so
nothing is downloaded), opens the report.html of a simulated sweep from disk and plays its clips.

`.ci/run` installs the two Debian packages; where they cannot be installed, these tests skip and say so.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from runner import gallery
from tests.conftest import ROOT, run_cli
from tests.helpers import sim_args, sim_env

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (make install adds it)")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="Debian's chromium and chromium-driver are not installed here (apt-get install -y chromium chromium-driver; .ci/run does)",
)
#: What the machine's closed network needs: no background connections, no first-run or sync.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic", "--window-size=1400,1000", "--allow-file-access-from-files")


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, script: str, timeout: float = 30):
    """Poll a JavaScript condition in the page until it is truthy (never a fixed sleep)."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: d.execute_script(script))


def save_screenshot(driver, tmp_path: Path, name: str) -> Path:
    """The screenshot as an artefact: in the test's folder, and a copy under .artifacts/ to look at."""
    shot = tmp_path / name
    assert driver.save_screenshot(str(shot))
    (ROOT / ".artifacts").mkdir(exist_ok=True)
    shutil.copy(shot, ROOT / ".artifacts" / name)
    return shot


def test_the_gallery_of_a_simulated_sweep_plays_and_filters(tmp_path, sim, browser):
    sim.inject("task_failed", on="fal.submit", model="fal-hailuo-02-standard", failure_code="SAFETY.INPUT.IMAGE", count=1)
    result = run_cli("-m", "model=gen4_turbo,hailuo", "prompt_set=animate", *sim_args(sim), cwd=tmp_path, env=sim_env(sim))
    assert "4 jobs: 3 downloaded, 1 failed" in result.stdout, result.stdout + result.stderr
    report = tmp_path / "outputs" / "animate" / "report.html"
    browser.get(report.as_uri())
    wait_for(browser, "return document.querySelectorAll('.line[data-filled]').length === 2")
    assert browser.execute_script("return document.querySelectorAll('video').length") == 3
    assert browser.execute_script("return [...document.querySelectorAll('video')].every(v => v.preload === 'metadata' && !v.autoplay)")
    # A clip's metadata loads from the relative link: the page works from disk, offline.
    wait_for(browser, "const v = document.querySelector('video'); return v.readyState >= 1 && v.duration > 0")
    durations = browser.execute_script("return [...document.querySelectorAll('video')].map(v => v.duration)")
    failed = browser.execute_script("return document.querySelector('.cell[data-state=failed] .why').textContent")
    assert "Input did not pass moderation" in failed
    flags = browser.execute_script("return [...document.querySelectorAll('.flag')].map(f => f.textContent)")
    assert any("asked 768p, got" in f for f in flags), flags  # Hailuo asked 768p; the simulator renders small clips
    # A row plays in sync: every clip of the prompt starts together.
    browser.execute_script("document.querySelector('.line[data-filled] button').click()")
    wait_for(browser, "return [...document.querySelector('.line[data-filled]').querySelectorAll('video')].every(v => !v.paused)")
    save_screenshot(browser, tmp_path, "gallery.png")
    # Filters hide cells: a model's column, then a state.
    browser.execute_script("document.querySelector('#models input[value=gen4_turbo]').click()")
    wait_for(browser, "return document.querySelectorAll('video').length === 1")
    browser.execute_script("document.querySelector('#states input[value=downloaded]').click()")
    # A filter re-renders the grid and rows fill in as they come into view: wait for the filled rows.
    wait_for(browser, "return document.querySelectorAll('.line[data-filled]').length === 2 && document.querySelectorAll('.cell.off').length === 1")
    assert browser.execute_script("return document.querySelectorAll('video').length") == 0
    assert all(d > 0 for d in durations), durations


def test_thousands_of_clips_keep_only_the_rows_in_view_alive(tmp_path, browser):
    clip = next(Path(__file__).parent.parent.joinpath("runner", "assets").glob("*.png"))
    shutil.copy(clip, tmp_path / "input.png")
    prompts, columns = 600, 5
    records = [{"key": f"{p:04d}{c}", "prompt_id": f"prompt-{p:04d}", "prompt": f"prompt number {p}", "column": f"model-{c} d5",
                "model": f"model-{c}", "state": "downloaded" if (p + c) % 7 else "failed", "spent_usd": 0.25 * (c + 1),
                "output_path": "clip.mp4", "error": None if (p + c) % 7 else "refused", "input_thumb": "input.png"}
               for p in range(prompts) for c in range(columns)]
    (tmp_path / "report.html").write_text(gallery.render("many", records))
    browser.get((tmp_path / "report.html").as_uri())
    wait_for(browser, "return document.querySelectorAll('.line[data-filled]').length > 0")
    rows = browser.execute_script("return document.querySelectorAll('.line:not(.heads)').length")
    alive = browser.execute_script("return document.querySelectorAll('video').length")
    assert rows == prompts and 0 < alive < 200  # 3,000 cells, a few rows of them rendered
    first = browser.execute_script("return document.querySelector('.line:not(.heads)').dataset.prompt")
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    wait_for(browser, "const l = [...document.querySelectorAll('.line:not(.heads)')]; return l[l.length - 1].dataset.filled")
    wait_for(browser, f"return !document.querySelector('.line[data-prompt=\"{first}\"]').dataset.filled")  # let go far away
    assert browser.execute_script("return document.querySelectorAll('video').length") < 200
    # Sorting by cost puts the dearest column first.
    browser.execute_script("const s = document.querySelector('#colsort'); s.value = 'cost-desc'; s.dispatchEvent(new Event('change'))")
    assert browser.execute_script("return document.querySelector('.head').textContent") == "model-4 d5"
    save_screenshot(browser, tmp_path, "gallery-many.png")
