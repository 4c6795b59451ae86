"""Regenerate README's picture of the report (docs/report.png) from a real pipeline run.

    make demo                                                  # writes runs/demo/report.html
    .venv/bin/python scripts/report_screenshot.py runs/demo/report.html --out docs/report.png

The report (`bvvlab pipeline`, bvvlab/app/report.py) is one self-contained HTML page: plotly.js
is inlined, so it renders offline. This opens it in headless Chromium (Debian's
/usr/bin/chromium, driven by Playwright exactly as tests/test_browser.py does: never
`playwright install`), waits until every plotly figure has drawn, and cuts out one section,
from its `<h2>` heading down to the next heading (default: "Frozen vs unfrozen embedding", the
twins' table and training curves). Pillow then shrinks it to `--width` pixels (Lanczos) and
stores it with an adaptive palette of `--colors` colours, which keeps a page of text and line
plots readable at a small size (README asks for under 200 KB; a bigger result is refused, one
line, nothing written). The PNG is written atomically: an existing picture is replaced only by a
complete new one.

Needs `apt-get install -y chromium` and the dev extras (`pip install -e '.[dev]'`: playwright,
Pillow). Bad input (no report, no such section, no browser) is one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
from pathlib import Path

# the flags tests/test_browser.py launches the system browser with
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
MAX_BYTES = 200_000

# JavaScript: the bounding box (page coordinates) of a section: its h2 through the element before
# the next h2 (or the end of the body).
SECTION_BOX = """(title) => {
  const heads = [...document.querySelectorAll('h2')];
  const i = heads.findIndex(h => h.textContent.trim().toLowerCase().startsWith(title.toLowerCase()));
  if (i < 0) return {missing: heads.map(h => h.textContent.trim())};
  const top = heads[i].getBoundingClientRect().top + window.scrollY;
  let bottom = top, el = heads[i];
  while (el && !(el !== heads[i] && el.tagName === 'H2')) {
    const r = el.getBoundingClientRect();
    if (r.height > 0) bottom = Math.max(bottom, r.bottom + window.scrollY);
    el = el.nextElementSibling;
  }
  const body = document.body.getBoundingClientRect();
  return {x: body.left, y: top, width: body.width, height: bottom - top};
}"""


class ShotError(Exception):
    """One line for the user: what is wrong and how to fix it."""


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    raise ShotError("chromium is not installed (apt-get install -y chromium)")


def capture(report: Path, section: str, viewport: int, margin: int) -> bytes:
    """A PNG of one report section, rendered at `viewport` CSS pixels wide, scale 1."""
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise ShotError("playwright is not installed (pip install -e '.[dev]')") from exc
    try:
        return _capture(sync_playwright, report, section, viewport, margin)
    except PlaywrightError as exc:  # the browser failed to start, or a figure never drew
        raise ShotError(f"chromium could not render {report}: {str(exc).splitlines()[0]}") from exc


def _capture(sync_playwright, report: Path, section: str, viewport: int, margin: int) -> bytes:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": viewport, "height": 900})
            page.goto(report.resolve().as_uri())
            # every figure drawn: plotly sets _fullLayout on a div once it has laid it out
            page.wait_for_function("() => [...document.querySelectorAll('.plotly-graph-div')]"
                                   ".every(d => d._fullLayout)", timeout=60_000)
            page.wait_for_timeout(500)  # let the last transitions settle
            box = page.evaluate(SECTION_BOX, section)
            if "missing" in box:
                raise ShotError(f"{report} has no section starting {section!r}; "
                                f"its sections: {', '.join(box['missing'])}")
            clip = {"x": max(0, box["x"] - margin), "y": max(0, box["y"] - margin),
                    "width": box["width"] + 2 * margin, "height": box["height"] + 2 * margin}
            return page.screenshot(clip=clip, full_page=True)
        finally:
            browser.close()


def shrink(png: bytes, width: int, colors: int) -> bytes:
    """Lanczos down to `width` pixels, then an adaptive palette: small and still readable."""
    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("RGB")
    if im.width > width:
        im = im.resize((width, round(im.height * width / im.width)), Image.Resampling.LANCZOS)
    im = im.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path, help="a pipeline run's report.html (e.g. runs/demo/report.html)")
    ap.add_argument("--out", type=Path, default=Path("docs/report.png"), help="the PNG to write")
    ap.add_argument("--section", default="Frozen vs unfrozen embedding",
                    help="the report section (start of its heading) to show")
    ap.add_argument("--viewport", type=int, default=1200, help="browser width in CSS pixels")
    ap.add_argument("--width", type=int, default=900, help="width of the PNG in pixels")
    ap.add_argument("--colors", type=int, default=64, help="palette size (2-256)")
    ap.add_argument("--margin", type=int, default=8, help="pixels around the section")
    args = ap.parse_args(argv)
    try:
        if not args.report.is_file():
            raise ShotError(f"no report at {args.report}: run `make demo` (or `bvvlab pipeline`) first")
        if not 2 <= args.colors <= 256 or args.width < 100 or args.viewport < 400 or args.margin < 0:
            raise ShotError("--colors must be 2-256, --width >= 100, --viewport >= 400, --margin >= 0")
        png = shrink(capture(args.report, args.section, args.viewport, args.margin), args.width, args.colors)
        if len(png) > MAX_BYTES:
            raise ShotError(f"the PNG would be {len(png):,} bytes (limit {MAX_BYTES:,}): "
                            "lower --width or --colors")
        from bvvlab.core.atomic import write_atomic

        write_atomic(args.out, png)
    except (ShotError, OSError) as exc:
        print(f"report_screenshot: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(png):,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
