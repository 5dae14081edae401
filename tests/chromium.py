"""Render a static page in headless Chromium (Debian's ``chromium``) and report what its images did.

The page is copied beside itself with a script added that, once everything has loaded, writes into
the DOM how many ``<img>`` elements there are and which did not decode; Chromium's ``--dump-dom``
returns that DOM. The flags keep Chromium off the network (this machine has none) and out of the
user's profile.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

CHECK = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt || i.src.slice(0, 60));
  const external = Array.from(document.querySelectorAll("[src],[href]"))
    .map(e => e.getAttribute("src") || e.getAttribute("href"))
    .filter(u => /^(https?:)?\\/\\//.test(u));
  const out = document.createElement("pre");
  out.id = "sla-jax-check";
  out.textContent = JSON.stringify({images: images.length, broken: broken, external: external,
                                    sizes: images.map(i => [i.naturalWidth, i.naturalHeight])});
  document.body.appendChild(out);
});
</script>"""
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-file-access-from-files",
]


def chromium() -> str:
    """The Chromium binary, or skip (fail where ``SLA_JAX_REQUIRE_CHROMIUM=1``, as ``.ci/run`` sets)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    message = "headless Chromium not installed (Debian: apt-get install chromium; .ci/run installs it)"
    if os.environ.get("SLA_JAX_REQUIRE_CHROMIUM") == "1":
        pytest.fail(message)
    pytest.skip(message)


def check_page(page: Path, *, screenshot: Path | None = None, timeout: float = 120) -> dict:
    """Load ``page`` in headless Chromium; returns {"images", "broken", "external", "sizes"}."""
    binary = chromium()
    probe = page.with_name(f".check-{page.name}")
    text = page.read_text(encoding="utf-8")
    probe.write_text(text.replace("</body>", CHECK + "</body>"), encoding="utf-8")
    try:
        with tempfile.TemporaryDirectory() as profile:
            run = lambda *extra: subprocess.run(  # noqa: E731
                [binary, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000", *extra, probe.as_uri()],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            done = run("--dump-dom")
            if screenshot is not None:
                run(f"--screenshot={screenshot}", "--window-size=1200,2400", "--hide-scrollbars")
    finally:
        probe.unlink(missing_ok=True)
    found = re.search(r'<pre id="sla-jax-check">(.*?)</pre>', done.stdout, re.S)
    assert found, f"Chromium returned no check result (exit {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
