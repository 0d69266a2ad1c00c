"""The HTML report in a real headless browser (Chromium from Debian: `apt-get install -y chromium`).

The page's own script writes `data-figures="loaded/total"` on <body> after the load event, counting
<img> elements that are complete with naturalWidth > 0 (decoded images). We read it back from
Chromium's --dump-dom and keep a full-page screenshot under test-artifacts/ (gitignored).
"""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from warmfast.cli import main
from study_data import data_path, need

REPO = Path(__file__).resolve().parents[1]
SAMPLE = data_path("warm_ai_2025/sample_data")
ARTIFACTS = REPO / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    why = ("Chromium is not installed; the report's browser test needs it: "
           "`apt-get update && apt-get install -y chromium` (Debian package `chromium`)")
    if os.environ.get("CI"):  # .ci/run installs it: a missing browser there is a broken CI, not a skip
        pytest.fail(why)
    pytest.skip(why)


def _run(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [browser, *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def test_every_figure_loads_in_headless_chromium(tmp_path):
    browser = _chromium()
    need(SAMPLE)
    out = tmp_path / "report"
    assert main(["report", str(SAMPLE), "--out", str(out)]) == 0
    page = out / "report.html"
    n_img = len(re.findall(r"<img ", page.read_text()))
    assert n_img == 6

    dom = _run(browser, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    m = re.search(r'<body[^>]*data-figures="([^"]*)"', dom.stdout)
    assert m, f"no <body data-figures> in Chromium's DOM dump: {dom.stdout[:500]!r}"
    assert m.group(1) == f"{n_img}/{n_img}", f"figures loaded/total = {m.group(1)}, expected {n_img}/{n_img}"

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report_sample_data.png"
    shot.unlink(missing_ok=True)
    res = _run(browser, tmp_path / "profile", "--hide-scrollbars", "--window-size=1400,4000",
               f"--screenshot={shot}", page.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000, f"screenshot {shot} is {len(data)} bytes"


def test_a_broken_figure_is_detected(tmp_path):
    """The check can fail: a page whose image does not decode reports fewer loaded than total."""
    browser = _chromium()
    page = tmp_path / "broken.html"
    good = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    from warmfast.analysis.render import render_html, figures
    html = render_html("t", ["x"], [{"id": "s", "title": "s", "blocks": [figures([
        {"caption": "ok", "src": f"data:image/png;base64,{good}"},
        {"caption": "broken", "src": "data:image/png;base64,AAAA"}])]}])
    page.write_text(html)
    dom = _run(browser, tmp_path / "profile", "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    assert re.search(r'data-figures="1/2"', dom.stdout), dom.stdout[:500]
