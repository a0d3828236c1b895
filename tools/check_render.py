"""Render every chapter in headless Chromium with no network, and check what a reader sees.

The built book (``_build/html``) is served on 127.0.0.1; Chromium resolves every other
host to nothing, so a page that needs a CDN fails here. For each page of ``_toc.yml`` the
script dumps the DOM after scripts ran and checks that maths was typeset by MathJax
(``mjx-container`` elements, and no raw ``\\(`` left), that executed outputs and figures are
present, applies the page rules of :mod:`tools.page_rules` to the rendered DOM, and
saves a screenshot under ``_build/render/``.

Usage: python tools/check_render.py [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import http.server
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools import page_rules  # noqa: E402
from tools.check_book import toc_files  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
OUT = ROOT / "_build" / "render"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def chromium_args(binary: str, profile: str) -> list[str]:
    return [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--disable-dev-shm-usage",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=15000", "--window-size=1280,2400",
    ]


def render_page(chromium: str, base: str, html_root: Path, out: Path,
                name: Path) -> tuple[Path, bool, list[str]]:
    """Dump one page's DOM and screenshot it; return whether it passed, and the report."""
    url = f"{base}/{name}.html"
    source = (html_root / f"{name}.html").read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([*chromium_args(chromium, profile), "--dump-dom", url],
                             capture_output=True, text=True, timeout=120).stdout
    shot = out / f"{name.name}.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([*chromium_args(chromium, profile), f"--screenshot={shot}", url],
                       capture_output=True, timeout=120)
    has_math = 'class="math' in source
    typeset = dom.count("<mjx-container")
    # raw delimiters left in the text (code, where a regex may hold "\[", is not text)
    text = re.sub(r"<script.*?</script>|<pre.*?</pre>", "", dom, flags=re.S)
    raw_left = len(re.findall(r"\\\(|\\\[", text))
    outputs = dom.count("cell_output")
    figures = len(re.findall(r"<img[^>]+src=\"[^\"]*_images/", dom))
    broken = page_rules.check_html(dom, html_root / f"{name}.html", html_root) if dom else []
    ok = bool(dom) and not broken and (not has_math or (typeset > 0 and raw_left == 0))
    lines = [f"     {problem}" for problem in broken]
    lines.append(f"{'ok  ' if ok else 'FAIL'} {name}: maths typeset={typeset} "
                 f"raw={raw_left} outputs={outputs} figures={figures} "
                 f"screenshot={shot.name}")
    return name, ok, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--html", type=Path, default=HTML,
                        help="the built book to check (default _build/html)")
    parser.add_argument("--out", type=Path, default=OUT,
                        help="folder for the screenshots (default _build/render)")
    args = parser.parse_args()
    html_root, out = args.html, args.out
    if not Path(args.chromium).exists():
        print(f"chromium not found at {args.chromium}; install Debian's chromium package")
        return 2
    handler = functools.partial(_Quiet, directory=str(html_root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    out.mkdir(parents=True, exist_ok=True)
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    entries = [Path(entry).with_suffix("") for entry in toc_files(toc)]
    try:
        # two pages at a time (the machine's two cores); each Chromium run starts afresh
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            reports = list(pool.map(
                lambda name: render_page(args.chromium, base, html_root, out, name),
                entries))
        failures = []
        for name, ok, lines in reports:
            print("\n".join(lines))
            if not ok:
                failures.append(str(name))
    finally:
        httpd.shutdown()
    if failures:
        print("render check FAILED for: " + ", ".join(failures))
        return 1
    print("render check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
