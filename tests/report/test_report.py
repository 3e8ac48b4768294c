"""HTML reports: self-contained (plots embedded, plotly inline once, no network) from JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from workbench.errors import WorkbenchError
from workbench.report.html import render, write_report
from workbench.report.plots import compose_png, heatmap_png, sweep_png

EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)
SCRIPT = re.compile(r"(<script[^>]*>)(.*?)</script>", re.IGNORECASE | re.DOTALL)


def loads_from_network(page: str) -> bool:
    """Whether the page would fetch anything: a script tag with ``src``, or an external
    ``src``/``href`` in the HTML itself (URLs inside the inlined plotly.js bundle are strings
    in code for map tiles and links, not resources the page loads)."""
    tags = [m.group(1) for m in SCRIPT.finditer(page)]
    html_only = SCRIPT.sub("", page)
    return any("src" in t.lower() for t in tags) or bool(EXTERNAL.search(html_only))


def _est(v: float) -> dict[str, float]:
    return {"value": v, "low": v - 0.1, "high": v + 0.1, "n": 4}


def sweep_data() -> dict[str, Any]:
    rows = []
    for layer in (2, 6):
        for c in (0.0, 1.0, 4.0, 64.0):
            rows.append(
                {
                    "layer": layer,
                    "coeff": c,
                    "units": "raw",
                    "raw_coeff": c,
                    "coeff_norm_units": c / 3,
                    "effect": c / 10,
                    "effect_ci": [c / 10 - 0.1, c / 10 + 0.1],
                    "effect_delta": c / 10,
                    "effect_delta_ci": [c / 10 - 0.1, c / 10 + 0.1],
                    "damage": 1 + c / 20,
                    "damage_ci": [1 + c / 25, 1 + c / 15],
                    "kl": c / 5,
                    "kl_ci": [0, c / 4],
                    "distinct2": 0.9,
                    "distinct2_ci": [0.8, 1.0],
                    "attn_to_steered": 0.1,
                }
            )
    overshoot = [
        {
            "layer": layer,
            "onset": 1.0,
            "best": 1.0,
            "breakdown": 4.0,
            "side": 1,
            "direction": 1,
            "diagnostics": {"why": "at coefficient 4 the added vector is <b>1.3x</b> the norm"},
        }
        for layer in (2, 6)
    ]
    summary = {"effect": _est(0.4), "damage": _est(1.1), "measures": {"kl": _est(0.2)}}
    return {
        "kind": "sweep",
        "model": "tiny",
        "vector": {"label": "wed", "method": "prompt_pair", "site": "resid_pre"},
        "effect": {"kind": "target_words", "label": "target words", "direction": 1},
        "config": {"units": "raw", "thresholds": {"max_ppl_ratio": 1.2, "min_distinct_ratio": 0.8}},
        "rows": rows,
        "overshoot": overshoot,
        "controls": {
            "note": "controls",
            "by_layer": [
                {"layer": 2, "coeff": 1.0, "vector": summary, "random": summary, "injection": None}
            ],
        },
        "samples": [
            {"layer": 2, "coeff": 1.0, "completions": [{"prompt": "I said", "text": "<script>"}]}
        ],
        "notes": ["a note"],
    }


def compose_data() -> dict[str, Any]:
    return {
        "kind": "compose",
        "model": "tiny",
        "vectors": [
            {"label": "a", "layer": 1, "coeff": 4.0, "metric": "m1"},
            {"label": "b", "layer": 2, "coeff": 2.0, "metric": "m2"},
        ],
        "effects": {"alone": [_est(1.0), _est(2.0)], "combined": [_est(0.9), _est(2.2)]},
        "retention": [0.9, 1.1],
        "alone_significant": [True, False],
        "interference": [[0.0, 0.1], [-0.1, 0.0]],
        "cosine": [[1.0, None], [None, 1.0]],
        "damage": {"combined": {"off_target_ratio": _est(1.1)}, "alone": [{}, {"kl": _est(0.1)}]},
        "samples": [{"run": "a alone", "completions": [{"prompt": "p", "text": "t"}]}],
    }


def test_sweep_report_is_self_contained(tmp_path: Path) -> None:
    page = render(sweep_data())
    assert page.count("src='data:image/png;base64,") == 2
    assert page.count("Plotly.newPlot") == 2
    # plotly.js is inlined, not fetched: no script/link/img points at the network.
    assert not loads_from_network(page)
    assert loads_from_network(page.replace("</body>", "<img src='https://x.org/a.png'></body>"))
    assert "&lt;script&gt;" in page and "<b>1.3x</b>" not in page  # texts are escaped
    out = write_report(sweep_data(), tmp_path / "r.html")
    assert out.read_text() == page
    (tmp_path / "s.json").write_text(json.dumps(sweep_data()))
    assert write_report(tmp_path / "s.json", tmp_path / "r2.html").read_text() == page


def test_demo_report_inlines_plotly_once() -> None:
    demo = {
        "kind": "demo",
        "model": "tiny",
        "findings": ["f1"],
        "stages": [{"stage": "capture", "seconds": 1.5, "summary": "ok"}],
        "candidates": [{"name": "c000pos", "label": "+0", "score": 2.0}],
        "sweep": sweep_data(),
        "compose": compose_data(),
    }
    page = render(demo)
    bundle = page.count("plotly.js v")  # the bundle's own banner comment
    assert bundle == 1
    assert page.count("Plotly.newPlot") == 3
    assert page.count("src='data:image/png;base64,") == 3
    assert "retention" in page and "c000pos" in page
    assert not loads_from_network(page)


def test_plots_are_png() -> None:
    for png in (sweep_png(sweep_data()), heatmap_png(sweep_data()), compose_png(compose_data())):
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_bad_report_inputs(tmp_path: Path) -> None:
    with pytest.raises(WorkbenchError, match="not a workbench run JSON"):
        render({"kind": "other"})
    with pytest.raises(WorkbenchError, match="not found"):
        write_report(tmp_path / "missing.json", tmp_path / "r.html")
