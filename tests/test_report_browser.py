"""The report as a reader sees it, in headless Chromium (with its methods, training curves and error analysis
of long utterances): every image decodes, nothing overflows the page at 1280 px, and full-page screenshots at 1400 px and 800 px are kept for a reviewer (the folder is printed;
CROSSLING_SCREENSHOTS chooses another)."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from analysis_factory import synthetic_table

from crossling.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = Path(os.environ.get("CROSSLING_SCREENSHOTS", Path(__file__).parent.parent / ".test-artifacts" / "screenshots"))
# Records what a reader's browser sees once the page has loaded: image sizes, page and viewport widths, height.
PROBE = """<script>window.addEventListener('load', () => {
  const root = document.documentElement, body = document.body;
  body.setAttribute('data-images', [...document.images].map(i => i.complete ? i.naturalWidth : -1).join(','));
  body.setAttribute('data-shown', [...document.images].map(i => Math.round(i.getBoundingClientRect().width)).join(','));
  body.setAttribute('data-scroll-width', root.scrollWidth);
  body.setAttribute('data-client-width', root.clientWidth);
  body.setAttribute('data-height', root.scrollHeight);
});</script>"""

pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")]


def _chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", "--disable-sync", "--hide-scrollbars",
               f"--user-data-dir={profile}", "--virtual-time-budget=10000", *extra, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The full synthetic study's report, and a copy with the probe (the page's CSP relaxed for it alone)."""
    from store_factory import write_run_files
    from tinydata_factory import make_prepared

    from crossling.methods import StudyFiles

    out, files = tmp_path_factory.mktemp("browser-report"), tmp_path_factory.mktemp("browser-files")
    table = write_run_files(files / "store", synthetic_table(), records=True)  # curves, error analysis, methods
    make_prepared(files / "prepared", language="de")
    write_report(table, out, title="Synthetic study: 16 checkpoints × 18 languages × 3 seeds",
                 files=StudyFiles(files / "store", files / "prepared"))
    html = (out / "report.html").read_text(encoding="utf-8")
    probe = html.replace("default-src 'none';", "default-src 'none'; script-src 'unsafe-inline';")
    (out / "probe.html").write_text(probe.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    return out


def _probe(report: Path, profile: Path, width: int) -> dict[str, list[int]]:
    dom = _chromium((report / "probe.html").as_uri(), profile, "--dump-dom", f"--window-size={width},900")
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = dict(re.findall(r'data-([a-z-]+)="([-\d,]*)"', dom.stdout))
    return {key: [int(v) for v in value.split(",") if v] for key, value in found.items()}


def test_every_image_loads_and_nothing_overflows_at_1280_px(report, tmp_path):
    seen = _probe(report, tmp_path / "p", 1280)
    figures = len(list((report / "figures").glob("*.png")))
    assert len(seen["images"]) == figures > 10
    assert {"training_loss", "dev_cer_curve", "cer_by_length"} <= {p.stem for p in (report / "figures").glob("*.png")}
    assert min(seen["images"]) > 0, seen["images"]  # decoded: naturalWidth > 0
    assert seen["scroll-width"][0] <= seen["client-width"][0], "the page scrolls sideways at 1280 px"
    assert max(seen["shown"]) <= seen["client-width"][0]


def test_figures_are_shown_at_their_natural_size_in_an_800_px_window(report, tmp_path):
    """Figures are drawn at most 7.2 in wide at 100 dpi: an 800 px window shows them unscaled, which is
    what keeps their text at >= 9 pt (tests/test_figures.py)."""
    seen = _probe(report, tmp_path / "p", 800)
    assert seen["shown"] == seen["images"]
    assert seen["scroll-width"][0] <= seen["client-width"][0]


@pytest.mark.parametrize("width", [1400, 800])
def test_full_page_screenshots_for_a_reviewer(report, tmp_path, width):
    height = _probe(report, tmp_path / "p", width)["height"][0]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / f"report-{width}px.png"
    result = _chromium((report / "report.html").as_uri(), tmp_path / "s", f"--screenshot={shot}",
                       f"--window-size={width},{height}")
    assert result.returncode == 0, result.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[1] == width and pixels.shape[0] >= min(height, 8000) and pixels[..., :3].std() > 0.05
    print(f"screenshot of the report at {width} px: {shot}")
