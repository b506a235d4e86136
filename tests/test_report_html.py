"""The HTML report in a real headless browser: Chromium renders it; the DOM and a screenshot are checked.

CI installs Chromium (``apt-get install -y chromium``). Set ``GANBENCH_CHROMIUM`` to use
another Chromium or Chrome binary. The test fails, never skips, when none is found.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from html.parser import HTMLParser

import matplotlib.image
import numpy as np
import pytest
import torch

from ganbench.report import write_report
from ganbench.training.pictures import save_sample_picture
from test_report import make_benchmark, make_run, quiet_console

BROWSER_TIMEOUT_SECONDS = 90
BAR_BLUE = np.array([76, 114, 176]) / 255  # the throughput bars



def chromium() -> str:
    for candidate in (os.environ.get("GANBENCH_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    pytest.fail("no Chromium found: install it (as root: apt-get update && apt-get install -y chromium) "
                "or set GANBENCH_CHROMIUM to a Chromium/Chrome binary.")


def headless(tmp_path, *arguments: str) -> str:
    """Run headless Chromium in its own process group; kill the whole group on timeout."""
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'chromium-profile'}",
               "--virtual-time-budget=5000", *arguments]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=BROWSER_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"Chromium did not finish within {BROWSER_TIMEOUT_SECONDS} s: {' '.join(command)}")
    assert process.returncode == 0, stderr[-2000:]
    return stdout


class Dom(HTMLParser):
    """What the checks need from the rendered DOM: tables with their rows, images, headings."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self.images: list[dict] = []
        self.headings: list[str] = []
        self._heading: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "table":
            self.tables.append({"class": attributes.get("class", ""), "rows": 0})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"] += 1
        elif tag == "img":
            self.images.append(attributes)
        elif tag in ("h1", "h2", "h3"):
            self._heading = []

    def handle_data(self, data):
        if self._heading is not None:
            self._heading.append(data)

    def handle_endtag(self, tag):
        if tag in ("h1", "h2", "h3") and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None


def make_two_dataset_benchmark(out):
    """Three losses x three seeds on ring8, two losses x two seeds on grid25, with real scatter pictures."""
    make_benchmark(out)
    for loss in ("ns", "hinge"):
        for seed in (0, 1):
            make_run(out, loss, seed, {"modes_covered": 20.0 + seed + (loss == "ns") * 3,
                                       "images_per_second": 800.0 + seed}, dataset="grid25")
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(500, 2, generator=generator)
    for picture in sorted(out.glob("runs/*/samples/step_*.png")):
        save_sample_picture(picture, torch.randn(200, 2, generator=generator) * 0.5, real, title=picture.parent.parent.name)


def test_html_report_renders_tables_and_pictures_in_headless_chromium(tmp_path):
    make_two_dataset_benchmark(tmp_path)
    report_dir = write_report([tmp_path], quiet_console(), sort="modes_covered")
    page = (report_dir / "report.html").resolve()
    assert "http://" not in page.read_text() and "https://" not in page.read_text()  # self-contained

    dom = Dom()
    dom.feed(headless(tmp_path, "--dump-dom", page.as_uri()))
    comparison = [t for t in dom.tables if "comparison" in t["class"].split()]
    assert [t["class"].split()[-1] for t in comparison] == ["dataset-grid25", "dataset-ring8"]
    assert [t["rows"] for t in comparison] == [1 + 2, 1 + 3]  # header row + one per config
    assert any("protocol" in t["class"] for t in dom.tables)
    assert any(h.startswith("ring8: sorted by modes_covered") for h in dom.headings)
    assert "Throughput" in dom.headings
    assert all(image["src"].startswith("data:image/png;base64,") for image in dom.images)
    titles = [image.get("alt", "") for image in dom.images]
    for title in ("ring8: training history", "ring8: final metrics over seeds", "grid25: training history",
                  "Throughput", "ring8: mlp/ns", "ring8: mlp/lsgan", "ring8: mlp/hinge", "grid25: mlp/ns",
                  "grid25: mlp/hinge"):
        assert title in titles, title

    screenshot = tmp_path / "page.png"
    headless(tmp_path, f"--screenshot={screenshot}", "--window-size=1280,6000", page.as_uri())
    pixels = matplotlib.image.imread(screenshot)[..., :3]
    assert pixels.std() > 0.05, "the screenshot is blank"
    def count(colour):
        return int((np.abs(pixels - colour).max(axis=-1) < 0.1).sum())

    assert count(BAR_BLUE) > 2000, "the throughput plot did not render"
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    generated_points = (red > 0.75) & (red - green > 0.3) & (red - blue > 0.3)  # #d62728, alpha 0.6
    assert int(generated_points.sum()) > 1000, "the sample scatter plots did not render"
