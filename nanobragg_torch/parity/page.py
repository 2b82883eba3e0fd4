"""The drift page: one self-contained HTML file for a reviewer (``index.html`` of the drift report and of
``tools/pr_report.py``).

Layout: the summary (Markdown rendered to HTML by the ``markdown`` package), a table of contents by factor
(each factor's cases, worst first), then one collapsible ``<details>`` per case: its figure (reference |
ours | signed difference, :func:`.pictures.diff_figure_png`), a comparer of the two images on one colour
scale with a *blink* (alternate the two) and a *swipe* (a slider uncovers ours over the reference) mode,
the metrics table and any extra HTML (the trace table). Pictures are inlined as data URIs.

After load the page states in ``#image-check`` how many images decoded; opened as ``index.html#selftest``
it also exercises every toggle and states the result in ``#toggle-check`` (read by the browser test).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import import_extra

__all__ = ["PageCase", "render_page", "shrink", "metrics_html", "MAX_PICTURES", "PICTURE_SIDE"]

MAX_PICTURES = 12  # cases drawn (the worst first; ~1 s each)
PICTURE_SIDE = 256  # larger images are block-averaged down to about this many pixels a side


@dataclass
class PageCase:
    """One case on the page."""

    case: str
    factor: str  # the group in the table of contents
    title: str = ""  # the summary line after the case name (default: the factor)
    note: str = ""  # a plain-text line under the title (e.g. the tests that failed)
    ref: np.ndarray | None = None
    ours: np.ndarray | None = None
    ref_label: str = "C golden"
    ours_label: str = "ours"
    caption: str = ""  # figure title (e.g. "case (float64)")
    metrics: Mapping[str, Any] = field(default_factory=dict)
    extra_html: str = ""  # trusted HTML made by our code (trace table)


def shrink(a: np.ndarray) -> np.ndarray:
    """Block mean down to about PICTURE_SIDE pixels a side (small images unchanged)."""
    a = np.asarray(a, dtype=np.float64)
    n = max(1, int(math.ceil(max(a.shape) / PICTURE_SIDE)))
    if n == 1:
        return a
    s, f = (a.shape[0] // n) * n, (a.shape[1] // n) * n
    return a[:s, :f].reshape(s // n, n, f // n, n).mean(axis=(1, 3))


def metrics_html(m: Mapping[str, Any]) -> str:
    rows = []
    for k, v in m.items():
        if isinstance(v, Mapping):
            rows.append(f"<tr><th colspan=2>{html.escape(str(k))}</th></tr>" + metrics_html(v))
        else:
            text = f"{v:.10g}" if isinstance(v, float) else str(v)
            rows.append(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(text)}</td></tr>")
    return "".join(rows)


def _anchor(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")


def _pair_pngs(ref: np.ndarray, ours: np.ndarray) -> tuple[bytes, bytes]:
    """The two images on one scale (log over 4 decades below their joint peak when both are >= 0, else
    linear), viridis, nearest-neighbour upscaled to about PICTURE_SIDE: for the blink/swipe comparer."""
    import io

    from PIL import Image

    colormaps = import_extra("matplotlib").colormaps

    finite = np.concatenate([ref[np.isfinite(ref)], ours[np.isfinite(ours)]])
    peak = float(finite.max()) if finite.size else 1.0
    low = float(finite.min()) if finite.size else 0.0
    cmap = colormaps["viridis"]
    zoom = max(1, PICTURE_SIDE // max(ref.shape))

    def png(a: np.ndarray) -> bytes:
        with np.errstate(divide="ignore", invalid="ignore"):
            if low >= 0 and peak > 0:
                t = (np.log10(np.clip(a, peak * 1e-4, None) / peak) + 4.0) / 4.0
            else:
                t = (a - low) / (peak - low) if peak > low else np.zeros_like(a)
        rgba = cmap(np.nan_to_num(np.clip(t, 0.0, 1.0)), bytes=True)
        rgba[~np.isfinite(a)] = (255, 255, 255, 255)
        img = Image.fromarray(np.ascontiguousarray(rgba[..., :3]))
        if zoom > 1:
            img = img.resize((img.width * zoom, img.height * zoom), Image.Resampling.NEAREST)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()

    return png(ref), png(ours)


def _comparer(i: int, ref_uri: str, ours_uri: str, ref_label: str, ours_label: str) -> str:
    r, o = html.escape(ref_label), html.escape(ours_label)
    return (
        f"<div class=cmp id=cmp{i} data-mode=swipe>"
        f"<div class=cmpbar><button type=button data-set=blink>blink</button>"
        f"<button type=button data-set=swipe class=on>swipe</button>"
        f"<input type=range min=0 max=100 value=50 aria-label='swipe position'>"
        f"<span class=shown>left: {r} | right: {o}</span></div>"
        f"<div class=stack><img class=ref alt='{r}' src='{ref_uri}'>"
        f"<img class=ours alt='{o}' src='{ours_uri}' style='clip-path:inset(0 0 0 50%)'></div>"
        f"<span hidden class=labels data-ref='{r}' data-ours='{o}'></span></div>"
    )


_CSS = (
    "body{font-family:sans-serif;margin:1.5em;max-width:1150px;color:#222}"
    "table{border-collapse:collapse;font-size:12px;margin:.5em 0}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}tr.bad{background:#fdd}"
    "img{max-width:100%}details{border:1px solid #ddd;border-radius:4px;margin:.4em 0;padding:.2em .6em}"
    "details>summary{cursor:pointer;font-weight:bold;padding:.2em 0}details[open]>summary{margin-bottom:.4em}"
    "nav.toc{background:#f6f8fa;padding:.5em 1em;border-radius:4px;font-size:13px}nav.toc li{margin:.15em 0}"
    ".cmp{display:inline-block;margin:.5em 0}.cmpbar{font-size:12px;margin-bottom:3px}"
    ".cmpbar button{font-size:12px;margin-right:3px}.cmpbar button.on{font-weight:bold;background:#dde}"
    ".cmpbar input{vertical-align:middle;width:160px}.stack{position:relative;display:inline-block;"
    "line-height:0;border:1px solid #ccc}.stack img{display:block;image-rendering:pixelated}"
    ".stack img.ours{position:absolute;left:0;top:0}.cmp[data-mode=blink] input{display:none}"
    "code{background:#f2f2f2;padding:0 3px}pre{white-space:pre-wrap;background:#f6f8fa;padding:.5em}"
)

# blink: the image on top alternates every 0.6 s; swipe: the slider uncovers ours from the right. Opened as
# #selftest the page opens every case, drives each toggle and writes what it saw to #toggle-check.
_SCRIPT = """
function nbMode(c,m){c.dataset.mode=m;var o=c.querySelector('img.ours'),s=c.querySelector('.shown'),
l=c.querySelector('.labels').dataset;c.querySelectorAll('button').forEach(function(b){
b.classList.toggle('on',b.dataset.set===m);});clearInterval(c._t);
if(m==='blink'){o.style.clipPath='none';c._t=setInterval(function(){nbBlink(c);},600);nbShow(c,true);}
else{nbSwipe(c,c.querySelector('input').value);s.textContent='left: '+l.ref+' | right: '+l.ours;}}
function nbShow(c,ours){var o=c.querySelector('img.ours'),l=c.querySelector('.labels').dataset;
o.style.visibility=ours?'visible':'hidden';c.querySelector('.shown').textContent='showing: '+(ours?l.ours:l.ref);}
function nbBlink(c){nbShow(c,c.querySelector('img.ours').style.visibility==='hidden');}
function nbSwipe(c,v){var o=c.querySelector('img.ours');o.style.visibility='visible';
o.style.clipPath='inset(0 0 0 '+v+'%)';}
document.querySelectorAll('.cmp').forEach(function(c){
c.querySelectorAll('button').forEach(function(b){b.addEventListener('click',function(){nbMode(c,b.dataset.set);});});
c.querySelector('input').addEventListener('input',function(e){nbSwipe(c,e.target.value);});
c.querySelector('.stack').addEventListener('click',function(){if(c.dataset.mode==='blink')nbBlink(c);});});
function nbImages(){var i=document.images,n=0;for(var k=0;k<i.length;k++){if(i[k].complete&&i[k].naturalWidth>0)n++;}
var p=document.getElementById('image-check');p.dataset.loaded=n;p.dataset.total=i.length;
p.textContent=n+' of '+i.length+' images loaded';}
function nbSelftest(){var cs=document.querySelectorAll('.cmp'),ok=0;
document.querySelectorAll('details').forEach(function(d){d.open=true;});
cs.forEach(function(c){var o=c.querySelector('img.ours'),r=true;
c.querySelector('button[data-set=blink]').click();var v1=o.style.visibility;nbBlink(c);var v2=o.style.visibility;
r=r&&c.dataset.mode==='blink'&&v1!==v2&&o.style.clipPath==='none';
c.querySelector('button[data-set=swipe]').click();var inp=c.querySelector('input');inp.value=30;
inp.dispatchEvent(new Event('input'));r=r&&c.dataset.mode==='swipe'&&o.style.clipPath.indexOf('30%')>=0
&&o.style.visibility==='visible';if(r)ok++;});
var t=document.getElementById('toggle-check');t.dataset.ok=ok;t.dataset.total=cs.length;
t.textContent=ok+' of '+cs.length+' comparers toggled';}
window.addEventListener('load',function(){if(location.hash==='#selftest')nbSelftest();nbImages();});
"""


def _markdown_html(text: str) -> str:
    markdown = import_extra("markdown")
    # no raw HTML from the text (case names and paths may come from a pull request)
    return markdown.markdown(text.replace("<", "&lt;"), extensions=["tables", "fenced_code", "sane_lists"])


def render_page(
    title: str,
    summary_md: str,
    cases: Sequence[PageCase],
    max_pictures: int = MAX_PICTURES,
    footer_md: str = "",
) -> str:
    """The page: ``summary_md`` rendered, the table of contents by factor, one collapsible section per case
    (``cases`` in the order given, which should be worst first; the first ``max_pictures`` with images are
    drawn)."""
    from .pictures import diff_figure_png, png_data_uri

    parts = [
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        "<section class=summary>" + _markdown_html(summary_md.removeprefix(f"## {title}\n")) + "</section>",
    ]
    groups: dict[str, list[tuple[int, PageCase]]] = {}
    for i, c in enumerate(cases):
        groups.setdefault(c.factor, []).append((i, c))
    if cases:
        toc = ["<nav class=toc><b>Cases by factor</b><ul>"]
        for factor, members in groups.items():
            links = ", ".join(
                f"<a href='#case-{_anchor(c.case)}-{i}'>{html.escape(c.case)}</a>" for i, c in members[:40]
            )
            more = f" and {len(members) - 40} more" if len(members) > 40 else ""
            toc.append(
                f"<li><a href='#factor-{_anchor(factor)}'><code>{html.escape(factor)}</code></a> "
                f"({len(members)}): {links}{more}</li>"
            )
        parts.append("".join(toc) + "</ul></nav>")
    drawn = 0
    for factor, members in groups.items():
        parts.append(f"<h2 id='factor-{_anchor(factor)}'><code>{html.escape(factor)}</code>: {len(members)}</h2>")
        for i, c in members:
            head = html.escape(c.title or f"first divergent factor {c.factor}")
            parts.append(
                f"<details id='case-{_anchor(c.case)}-{i}'{' open' if i == 0 else ''}>"
                f"<summary>{html.escape(c.case)}: {head}</summary>"
            )
            if c.note:  # "; "-separated facts, one per line
                parts.append("<p>" + "<br>".join(html.escape(x) for x in c.note.split("; ")) + "</p>")
            if c.ref is not None and c.ours is not None and drawn < max_pictures:
                ref, ours = shrink(c.ref), shrink(c.ours)
                fig = diff_figure_png(ref, ours, title=c.caption or c.case, ref_label=c.ref_label,
                                      ours_label=c.ours_label)
                parts.append(
                    f"<img alt='{html.escape(c.case)}: {html.escape(c.ref_label)} | {html.escape(c.ours_label)}"
                    f" | difference' src='{png_data_uri(fig)}'>"
                )
                if ref.shape == ours.shape:
                    a, b = _pair_pngs(ref, ours)
                    parts.append(_comparer(drawn, png_data_uri(a), png_data_uri(b), c.ref_label, c.ours_label))
                drawn += 1
            if c.metrics:
                parts.append("<h3>Metrics</h3><table>" + metrics_html(c.metrics) + "</table>")
            parts.append(c.extra_html + "</details>")
    with_pictures = sum(1 for c in cases if c.ref is not None)
    if with_pictures > drawn:
        parts.append(f"<p>Pictures drawn for the {drawn} worst cases only ({with_pictures} have images).</p>")
    if footer_md:
        parts.append(_markdown_html(footer_md))
    parts.append(
        "<p id=image-check></p><p id=toggle-check></p><script>" + _SCRIPT + "</script></body></html>"
    )
    return "".join(parts)
