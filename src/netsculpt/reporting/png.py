"""Static PNG images of plotly figures, offline: kaleido when it works, else headless Chromium.

>>> write_png(fig, "front.png")      # doctest: +SKIP
PosixPath('front.png')

Returns None (and writes nothing) when neither kaleido nor a Chromium binary can render
the figure; callers treat the PNG as optional.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

__all__ = ["chromium_binary", "write_png"]


def chromium_binary() -> str | None:
    """Path of a Chromium/Chrome binary, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def write_png(
    fig: go.Figure, path: str | os.PathLike[str], *, width: int = 1000, height: int = 600
) -> Path | None:
    """Render ``fig`` to a PNG at ``path``; None when no renderer is available."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.write_image(str(out), width=width, height=height, scale=1)
        if out.is_file() and out.stat().st_size > 0:
            return out
    except Exception:  # noqa: BLE001, S110 -- kaleido missing or without a browser: Chromium next
        pass
    browser = chromium_binary()
    if browser is None:
        return None
    with tempfile.TemporaryDirectory(prefix="netsculpt-png-") as tmp:
        page = Path(tmp) / "figure.html"
        fig = go.Figure(fig)
        fig.update_layout(width=width, height=height, margin={"l": 60, "r": 30, "t": 60, "b": 60})
        html = pio.to_html(
            fig,
            include_plotlyjs=True,
            full_html=True,
            config={"displayModeBar": False, "staticPlot": True},
        )
        html = html.replace("<body>", "<body style='margin:0;overflow:hidden'>", 1)
        page.write_text(html, encoding="utf-8")
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={Path(tmp) / 'profile'}",
            "--virtual-time-budget=10000",
            f"--window-size={width},{height}",
            f"--screenshot={out.resolve()}",
            page.resolve().as_uri(),
        ]
        try:
            subprocess.run(cmd, capture_output=True, timeout=120, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
    return out if out.is_file() and out.stat().st_size > 0 else None
