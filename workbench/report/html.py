"""Self-contained HTML reports rendered from the JSON of a sweep, compose, measure or demo run.

The JSON is the source of truth; :func:`render` only reads it. Plots are embedded twice: as PNG
(``data:`` URIs, for printing and quick viewing) and as interactive plotly figures whose
plotly.js is inlined once per page, so the file opens offline and loads nothing from the
network.

Example:
    >>> write_report("runs/sweep/sweep.json", "runs/sweep/report.html")   # doctest: +SKIP
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from workbench.errors import check
from workbench.io import atomic_path, read_json
from workbench.report.plots import (
    compose_figures,
    compose_png,
    figures_html,
    heatmap_png,
    png_uri,
    sweep_figures,
    sweep_png,
)

KINDS = ("sweep", "compose", "measure", "demo")

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3} img{max-width:100%} .note{color:#955} .muted{color:#777}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _num(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return _e(x)


def _est(d: dict[str, Any] | None) -> str:
    """``value [low, high]`` of an Estimate JSON."""
    if not d:
        return "-"
    return f"{_num(d['value'])} <span class='muted'>[{_num(d['low'])}, {_num(d['high'])}]</span>"


def _ci(row: dict[str, Any], key: str) -> str:
    if key not in row:
        return "-"
    lo, hi = row.get(f"{key}_ci", [None, None])
    return f"{_num(row[key])} <span class='muted'>[{_num(lo)}, {_num(hi)}]</span>"


def _interval(ci: list[float] | None) -> str:
    return "" if not ci else f" [{_num(ci[0])}, {_num(ci[1])}]"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{_e(alt)}' src='{png_uri(png)}'>"


def _notes(notes: list[str]) -> str:
    return "".join(f"<p class='note'>Note: {_e(n)}</p>" for n in notes)


class _Page:
    """Accumulates sections; inlines plotly.js only before the first interactive figure."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.js_done = False
        self.n_figures = 0

    def add(self, text: str) -> None:
        self.parts.append(text)

    def figures(self, figs: list[Any]) -> None:
        self.add(figures_html(figs, include_js=not self.js_done, first_id=self.n_figures))
        self.js_done = True
        self.n_figures += len(figs)


# --------------------------------------------------------------------------- sweep


def _sweep(page: _Page, data: dict[str, Any]) -> None:
    v = data["vector"]
    cfg = data["config"]
    page.add(
        f"<h2>Sweep: {_e(v.get('label'))} on {_e(data['model'])}</h2>"
        f"<p>Vector: {_e(v.get('method'))} (site {_e(v.get('site'))}); effect: "
        f"{_e(data['effect']['label'])} ({'higher' if data['effect']['direction'] > 0 else 'lower'}"
        f" is better); damage: off-target perplexity ratio (threshold "
        f"{_num(cfg['thresholds']['max_ppl_ratio'])}, distinct-2 ratio >= "
        f"{_num(cfg['thresholds']['min_distinct_ratio'])}); coefficients in {_e(cfg['units'])} "
        "units. Intervals are 95% bootstrap intervals over prompts, seeds and sentences.</p>"
    )
    page.add("<h3>Overshoot</h3>")
    page.add(
        _table(
            ["layer", "onset", "best", "breakdown", "why it breaks"],
            [
                [
                    _num(o["layer"]),
                    _num(o["onset"]),
                    _num(o["best"]),
                    _num(o["breakdown"]),
                    _e(o["diagnostics"].get("why", "")),
                ]
                for o in data["overshoot"]
            ],
        )
    )
    page.add("<h3>Plots</h3>" + _img(sweep_png(data), "effect and damage"))
    page.add(_img(heatmap_png(data), "layer x coefficient heatmap"))
    page.figures(sweep_figures(data))
    page.add("<h3>Rows</h3>")
    page.add(
        _table(
            [
                "layer",
                "coeff",
                "x resid norm",
                "effect",
                "damage",
                "specificity",
                "KL (neutral)",
                "distinct-2",
                "attn to steered",
            ],
            [
                [
                    _num(r["layer"]),
                    _num(r["coeff"]),
                    _num(r["coeff_norm_units"]),
                    _ci(r, "effect"),
                    _ci(r, "damage"),
                    _ci(r, "specificity"),
                    _ci(r, "kl"),
                    _ci(r, "distinct2"),
                    _num(r.get("attn_to_steered")),
                ]
                for r in data["rows"]
            ],
        )
    )
    _controls(page, data["controls"])
    _samples(page, data.get("samples", []))
    page.add(_notes(data.get("notes", [])))


def _controls(page: _Page, controls: dict[str, Any]) -> None:
    page.add("<h3>Controls</h3><p>" + _e(controls.get("note", "")) + "</p>")
    rows = []
    for c in controls.get("by_layer", []):
        for name in ("vector", "random", "injection"):
            s = c.get(name)
            if not s:
                continue
            m = s.get("measures", {})
            rows.append(
                [
                    _num(c["layer"]),
                    _num(c["coeff"]),
                    _e(name),
                    _est(s.get("effect")),
                    _est(s.get("damage")),
                    _est(m.get("kl")),
                    _est(m.get("on_target_ratio")),
                ]
            )
    page.add(
        _table(
            ["layer", "coeff", "run", "effect (vs unsteered)", "damage", "KL", "on-target ratio"],
            rows,
        )
    )
    for c in controls.get("by_layer", []):
        if c.get("matched"):
            _matched(page, c["matched"], f"layer {c['layer']}, coefficient {_num(c['coeff'])}")


def _matched(page: _Page, matched: dict[str, Any], where: str) -> None:
    """Matched controls: the specificity verdict in words, then each control's numbers."""
    page.add(f"<h3>Specificity against matched controls ({_e(where)})</h3>")
    spec = matched.get("specificity")
    if spec:
        page.add(f"<p class='verdict'><b>{_e(spec['verdict'])}</b></p>")
    page.add(
        "<p>Specificity = mean log off-target perplexity ratio minus mean log on-target ratio "
        "(nats per token; positive: lowers on-target text more). Controls are built the same "
        "way as the vector (control words in place of the positive prompt for prompt pairs, "
        "norm-matched random vectors otherwise); the p-value is a one-sided permutation test of "
        "the vector against its controls, sentence by sentence.</p>"
    )
    eff = matched.get("effect") or {}
    rows = []
    if eff.get("vector") is not None:
        rows.append(["the vector", _num(eff["vector"]), _num(spec and spec["specificity"])])
    for item in matched.get("items", []):
        rows.append(
            [
                _e(item["label"]),
                _est(item.get("effect")),
                _num(item.get("specificity")),
            ]
        )
    if rows:
        page.add(_table(["run", f"effect ({_e(eff.get('measure', ''))})", "specificity"], rows))
    page.add(_notes(matched.get("notes", [])))


def _samples(page: _Page, samples: list[dict[str, Any]]) -> None:
    shown = [s for s in samples if s.get("completions")]
    if not shown:
        return
    page.add("<h3>Sample completions</h3>")
    rows = [
        [
            _e(s.get("run") or f"layer {s['layer']}, coeff {s['coeff']:g}"),
            _e(c["prompt"]),
            _e(c["text"]),
        ]
        for s in shown
        for c in s["completions"]
    ]
    page.add(_table(["run", "prompt", "completion"], rows))


# --------------------------------------------------------------------------- compose


def _compose(page: _Page, data: dict[str, Any]) -> None:
    page.add(f"<h2>Composition on {_e(data['model'])}</h2>")
    vecs = data["vectors"]
    page.add(
        _table(
            ["vector", "layer", "coeff", "metric", "alone", "combined", "retention"],
            [
                [
                    _e(v["label"]),
                    _num(v["layer"]),
                    _num(v["coeff"]),
                    _e(v["metric"]),
                    _est(data["effects"]["alone"][i]),
                    _est(data["effects"]["combined"][i]),
                    _num(data["retention"][i])
                    + _interval((data.get("retention_ci") or [None] * len(vecs))[i])
                    + (
                        " <span class='note'>(alone effect not distinct from 0)</span>"
                        if not data["alone_significant"][i]
                        else ""
                    ),
                ]
                for i, v in enumerate(vecs)
            ],
        )
    )
    page.add("<ul>" + "".join(f"<li>{_e(v)}</li>" for v in data.get("verdicts", [])) + "</ul>")
    page.add(_img(compose_png(data), "composition"))
    page.figures(compose_figures(data))
    dmg = data["damage"]
    rows = [
        ["combined", _est(dmg["combined"].get("off_target_ratio")), _est(dmg["combined"].get("kl"))]
    ]
    rows += [
        [f"{_e(v['label'])} alone", _est(d.get("off_target_ratio")), _est(d.get("kl"))]
        for v, d in zip(vecs, dmg["alone"], strict=True)
    ]
    page.add("<h3>Damage</h3>" + _table(["run", "off-target ppl ratio", "KL (neutral)"], rows))
    _samples(page, data.get("samples", []))
    page.add(_notes(data.get("notes", [])))


# --------------------------------------------------------------------------- measure / demo


def _measure(page: _Page, data: dict[str, Any]) -> None:
    page.add(f"<h2>Measurement on {_e(data['model'])}</h2>")
    rows = []
    for name in ("unsteered", "steered", "random", "injection"):
        s = data.get(name)
        if s:
            m = s.get("measures", {})
            rows.append(
                [
                    _e(name),
                    _est(s.get("effect")),
                    _est(s.get("damage")),
                    _est(m.get("kl")),
                    _est(m.get("distinct2")),
                ]
            )
    page.add(_table(["run", "effect", "damage", "KL", "distinct-2"], rows))
    if data.get("matched_controls"):
        _matched(page, data["matched_controls"], f"coefficient {_num(data['coeff'])}")
    top = (data.get("steered") or {}).get("measures", {}).get("kl_top", [])
    if top:
        page.add("<h3>Top KL contributors</h3>")
        page.add(
            _table(
                ["token", "contribution", "p steered", "p unsteered"],
                [
                    [_e(repr(t["token"])), _num(t["contribution"]), _num(t["p"]), _num(t["q"])]
                    for t in top
                ],
            )
        )


def _demo(page: _Page, data: dict[str, Any]) -> None:
    page.add(f"<h2>Demo on {_e(data['model'])}</h2>")
    page.add("<ul>" + "".join(f"<li>{_e(f)}</li>" for f in data.get("findings", [])) + "</ul>")
    page.add(
        _table(
            ["stage", "seconds", "result"],
            [
                [_e(s["stage"]), _num(s["seconds"]), _e(s.get("summary", ""))]
                for s in data.get("stages", [])
            ],
        )
    )
    cands = data.get("candidates") or []
    if cands:
        page.add("<h3>Discovered candidates</h3>")
        keys = [k for k in cands[0] if not isinstance(cands[0][k], (list, dict))]
        page.add(_table(keys, [[_num(c.get(k)) for k in keys] for c in cands]))
    page.add(_notes(data.get("notes", [])))
    for key, fn in (("measure", _measure), ("sweep", _sweep), ("compose", _compose)):
        if data.get(key):
            fn(page, data[key])


def render(data: dict[str, Any]) -> str:
    """The HTML page of a run's JSON (``data["kind"]`` in sweep, compose, measure, demo)."""
    kind = data.get("kind")
    check(kind in KINDS, f"not a workbench run JSON (kind {kind!r}); expected one of {KINDS}")
    page = _Page()
    {"sweep": _sweep, "compose": _compose, "measure": _measure, "demo": _demo}[str(kind)](
        page, data
    )
    body = "\n".join(page.parts)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>workbench {_e(kind)} report</title><style>{_STYLE}</style></head>"
        f"<body><h1>Steering workbench: {_e(kind)} report</h1>{body}</body></html>"
    )


def write_report(
    data: dict[str, Any] | str | os.PathLike[str], out: str | os.PathLike[str]
) -> Path:
    """Render ``data`` (a run's JSON, or the path of one) to the HTML file ``out``."""
    loaded = data if isinstance(data, dict) else read_json(data, "run JSON")
    check(isinstance(loaded, dict), "the run JSON is not an object")
    text = render(loaded)
    path = Path(out)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
