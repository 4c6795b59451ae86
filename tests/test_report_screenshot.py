"""scripts/report_screenshot.py: README's picture of the report, cut from a real report.html.

The shrink step (Pillow) and the error lines run everywhere; the capture drives headless
Chromium like tests/test_browser.py (marked `browser` and `slow`, skipped without chromium except
under CI=true)."""

from __future__ import annotations

import importlib.util
import io
import os
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("report_screenshot", ROOT / "scripts" / "report_screenshot.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shrink_keeps_the_aspect_and_a_small_palette():
    shot = load_script()
    im = Image.new("RGB", (1200, 600), "white")
    for x in range(0, 1200, 7):  # many colours in, at most `colors` out
        im.putpixel((x, 300), (x % 256, (3 * x) % 256, 90))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    out = Image.open(io.BytesIO(shot.shrink(buf.getvalue(), 900, 16)))
    assert out.size == (900, 450) and out.mode == "P"
    assert len(out.getcolors()) <= 16


def test_a_missing_report_is_one_line_and_writes_nothing(tmp_path, capsys):
    shot = load_script()
    out = tmp_path / "report.png"
    assert shot.main([str(tmp_path / "nope.html"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no report at" in err[0] and "make demo" in err[0]
    assert not out.exists()


def test_bad_sizes_are_refused_before_the_browser_starts(tmp_path, capsys):
    shot = load_script()
    report = tmp_path / "report.html"
    report.write_text("<h2>A</h2>", encoding="utf-8")
    assert shot.main([str(report), "--colors", "1", "--out", str(tmp_path / "x.png")]) == 2
    assert "--colors must be 2-256" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def needs_chromium(shot) -> None:
    """tests/test_browser.py's rule: skip without chromium, except under CI=true, where it fails."""
    try:
        shot.chromium()
    except shot.ShotError as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{exc}: CI must run the browser tests (.ci/run installs chromium)")
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A report-shaped page: two sections, a plotly figure (plotly.js inline, as the report has it)."""
    import plotly.graph_objects as go
    import plotly.io as pio

    fig = go.Figure(go.Scatter(x=[0, 1, 2], y=[3, 1, 2]), layout={"height": 300})
    body = pio.to_html(fig, include_plotlyjs=True, full_html=False)
    html = (f"<html><body style='max-width:800px'><h1>report</h1><h2>First section</h2><p>text</p>{body}"
            f"<h2>Second</h2><div style='height:1500px'>long</div></body></html>")
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(html, encoding="utf-8")
    return path


@pytest.mark.slow
@pytest.mark.browser
def test_one_section_is_cut_out_of_the_rendered_page(report, tmp_path):
    shot = load_script()
    needs_chromium(shot)
    out = tmp_path / "shot.png"
    assert shot.main([str(report), "--section", "first", "--viewport", "1000", "--width", "500",
                      "--out", str(out)]) == 0
    im = Image.open(out)
    # the section (heading, paragraph, a 300-px figure), scaled by 1/2: not the 1,500-px section below it
    assert im.width == 500 and 150 < im.height < 400
    assert out.stat().st_size < shot.MAX_BYTES
    assert len(im.getcolors()) > 2  # the figure drew: not a blank page


@pytest.mark.slow
@pytest.mark.browser
def test_an_unknown_section_names_the_ones_there(report, tmp_path, capsys):
    shot = load_script()
    needs_chromium(shot)
    assert shot.main([str(report), "--section", "Growth", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "First section, Second" in err[0]
    assert not (tmp_path / "x.png").exists()
