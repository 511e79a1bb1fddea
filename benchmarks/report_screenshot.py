"""Render a `nas report` page in headless Chromium and save a PNG, to check how it reads in a real
browser (fonts, wrapping, inline SVG), not just that the HTML was written.

    python benchmarks/report_screenshot.py --study demo [--storage URL] [--out results/report_shot.png]
    python benchmarks/report_screenshot.py --html results/report/report.html --out shot.png

Needs a Chromium binary (Debian: `apt-get install chromium`; or set $CHROMIUM). Runs offline: the
report has no external resources, and Chromium's background networking is switched off.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import _repo_path  # noqa: F401  (repository root first on sys.path)

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


def find_chromium() -> str:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    sys.exit("no Chromium found: apt-get install chromium (or set $CHROMIUM)")


def screenshot(html: Path, png: Path, width: int = 1400, height: int = 2400, timeout: float = 120) -> Path:
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nas-chromium-") as profile:
        cmd = [find_chromium(), *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
               f"--window-size={width},{height}", Path(html).resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not png.exists():
        sys.exit(f"chromium failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return png


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--study", help="write the report of this study first")
    src.add_argument("--html", type=Path, help="an existing report.html")
    ap.add_argument("--storage", help="storage URL [default: sqlite:///results/<study>.db]")
    ap.add_argument("--report-dir", type=Path, help="where to write the report [default: a temporary dir]")
    ap.add_argument("--out", type=Path, default=Path("results/report_screenshot.png"))
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=2400)
    args = ap.parse_args(argv)
    html = args.html
    if args.study:
        from nas.engine.config import default_storage
        from nas.results.report import write_report
        from nas.results.trials import trials_frame
        from nas.store.study import ENV_ATTR, load_study

        url = args.storage or default_storage(args.study)
        st, _ = load_study(url, args.study)
        out_dir = args.report_dir or Path(tempfile.mkdtemp(prefix="nas-report-"))
        html = write_report(trials_frame(st), out_dir,
                            environment=st.user_attrs.get(ENV_ATTR) or {}, storage=url)["html"]
    png = screenshot(html, args.out, args.width, args.height)
    print(f"{html} -> {png}")


if __name__ == "__main__":
    main()
