"""Plots of sweep and compose JSON: PNG (matplotlib, Agg) and interactive HTML (plotly).

Everything is drawn from the JSON alone, so a report can be re-rendered from a saved run.
Interactive HTML embeds plotly.js inline (no network needed to open it).

* sweep: effect and damage against coefficient, one line per layer with bootstrap intervals and
  onset / best / breakdown marked; a layer x coefficient heatmap of each.
* compose: retention per vector, the interference matrix, the cosine matrix.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.patheffects as pe  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
from plotly.subplots import make_subplots  # noqa: E402

from workbench.io import atomic_path  # noqa: E402

_halo = [pe.withStroke(linewidth=2.5, foreground="white")]
MARKS = {"onset": ("o", "circle"), "best": ("*", "star"), "breakdown": ("X", "x")}

# Internal metric keys -> what a reader sees (tables, axis titles, captions).
METRIC_NAMES = {
    "sentiment": "sentiment of completions (VADER, -1..1)",
    "target_words": "target words per completion",
    "target_logprob": "next-token log-prob of target words (nats)",
    "target_logprob_shift": "shift in next-token log-prob of target words (nats)",
    "on_target": "perplexity ratio on on-target text",
    "off_target_ratio": "off-target perplexity ratio (steered / unsteered)",
    "kl": "next-token KL from unsteered (nats)",
    "distinct_ratio": "distinct-2 / unsteered",
}

# Why a sweep has no onset, best or breakdown (the finder's definitions, negated).
MISSING_MARKS = {
    "onset": "no coefficient moved the effect beyond the unsteered interval in the wanted "
    "direction; try larger coefficients, another layer, or flip 'Lower is better'",
    "best": "no coefficient below breakdown steered the wanted way, so there is no best one",
    "breakdown": "damage stayed under the thresholds at every coefficient tried",
}


def metric_title(key: str) -> str:
    """``"target_logprob_shift:v2"`` -> ``"shift in next-token log-prob ... (v2)"``."""
    kind, _, tag = str(key).partition(":")
    name = METRIC_NAMES.get(kind, kind.replace("_", " "))
    return f"{name} ({tag})" if tag else name


def missing_marks(overshoot: dict[str, Any]) -> dict[str, str]:
    """For each of onset, best, breakdown that ``overshoot`` (one layer's JSON) lacks: why."""
    return {m: MISSING_MARKS[m] for m in MARKS if overshoot.get(m) is None}


def robust_range(values: Any, low: float = 2.0, high: float = 98.0) -> tuple[float, float] | None:
    """The ``low``-``high`` percentile range of the finite ``values`` (a colour scale that one
    outlier cannot saturate); None when there are none or they are all equal."""
    arr = np.asarray(values, dtype=float).ravel()
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return None
    lo, hi = (float(x) for x in np.percentile(arr, [low, high]))
    if hi <= lo:
        lo, hi = float(arr.min()), float(arr.max())
    return (lo, hi) if hi > lo else None


def png_uri(png: bytes) -> str:
    """``data:`` URI of a PNG, for embedding in HTML."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _by_layer(data: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for row in data["rows"]:
        out.setdefault(int(row["layer"]), []).append(row)
    return out


def _linthresh(coeffs: list[float]) -> float:
    nonzero = [abs(c) for c in coeffs if c != 0]
    return min(nonzero) if nonzero else 1.0


def _wide(coeffs: list[float]) -> bool:
    nonzero = [abs(c) for c in coeffs if c != 0]
    return bool(nonzero) and max(nonzero) / min(nonzero) >= 20


def _damage_limit(data: dict[str, Any]) -> float:
    return float(data["config"]["thresholds"]["max_ppl_ratio"])


def sweep_png(data: dict[str, Any]) -> bytes:
    """Effect and damage against coefficient, one line per layer, overshoot marked."""
    layers = _by_layer(data)
    overshoot = {int(o["layer"]): o for o in data["overshoot"]}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    panels = [("effect", data["effect"]["label"]), ("damage", "off-target perplexity ratio")]
    coeffs = sorted({float(r["coeff"]) for r in data["rows"]})
    for ax, (key, title) in zip(axes, panels, strict=True):
        for layer, rows in layers.items():
            xs = [r["coeff"] for r in rows if key in r]
            if not xs:
                continue
            ys = [r[key] for r in rows if key in r]
            lo = [r[key] - r[f"{key}_ci"][0] for r in rows if key in r]
            hi = [r[f"{key}_ci"][1] - r[key] for r in rows if key in r]
            line = ax.errorbar(xs, ys, yerr=[lo, hi], marker=".", capsize=3, label=f"layer {layer}")
            ov = overshoot.get(layer, {})
            for mark, (symbol, _) in MARKS.items():
                if ov.get(mark) is not None and ov[mark] in xs:
                    y = ys[xs.index(ov[mark])]
                    ax.plot([ov[mark]], [y], symbol, ms=11, color=line[0].get_color(), mfc="none")
        if key == "damage":
            ax.axhline(_damage_limit(data), ls="--", color="grey", lw=1, label="damage threshold")
        if _wide(coeffs):
            lt = _linthresh(coeffs)
            ax.set_xscale("symlog", linthresh=lt)
            c_lo, c_hi = min(coeffs), max(coeffs)
            left = c_lo * 1.5 if c_lo < 0 else c_lo - 0.3 * lt
            ax.set_xlim(left, c_hi * 1.5 if c_hi > 0 else c_hi + 0.3 * lt)
        ax.set_xlabel(f"coefficient ({data['config']['units']} units)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, title="o onset  * best  X breakdown", title_fontsize=8)
    return _png(fig)


def _grid(
    data: dict[str, Any], key: str
) -> tuple[list[int], list[float], list[list[float | None]]]:
    layers = sorted(_by_layer(data))
    coeffs = sorted({float(r["coeff"]) for r in data["rows"]})
    cell = {(int(r["layer"]), float(r["coeff"])): r.get(key) for r in data["rows"]}
    return layers, coeffs, [[cell.get((layer, c)) for c in coeffs] for layer in layers]


def heatmap_png(data: dict[str, Any]) -> bytes:
    """Layer x coefficient heatmaps of effect and damage."""
    height = 0.6 * len(_by_layer(data)) + 2.2
    fig, axes = plt.subplots(1, 2, figsize=(11, height), layout="constrained")
    for ax, key in zip(axes, ("effect", "damage"), strict=True):
        layers, coeffs, grid = _grid(data, key)
        values = [[float("nan") if v is None else v for v in row] for row in grid]
        im = ax.imshow(values, aspect="auto", cmap="viridis" if key == "effect" else "magma_r")
        ax.set_xticks(range(len(coeffs)), [f"{c:g}" for c in coeffs])
        ax.set_yticks(range(len(layers)), [str(x) for x in layers])
        ax.set_xlabel("coefficient")
        ax.set_ylabel("layer")
        ax.set_title(data["effect"]["label"] if key == "effect" else "off-target perplexity ratio")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if v is not None:
                    ax.text(
                        j, i, f"{v:.2g}", ha="center", va="center", fontsize=7, path_effects=_halo
                    )
        fig.colorbar(im, ax=ax)
    return _png(fig)


def sweep_figures(data: dict[str, Any]) -> list[go.Figure]:
    """Interactive twins of :func:`sweep_png` and :func:`heatmap_png`."""
    overshoot = {int(o["layer"]): o for o in data["overshoot"]}
    curves = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(data["effect"]["label"], "damage"),
        horizontal_spacing=0.12,
    )
    for layer, rows in _by_layer(data).items():
        for col, key in ((1, "effect"), (2, "damage")):
            have = [r for r in rows if key in r]
            if not have:
                continue
            curves.add_trace(
                go.Scatter(
                    x=[r["coeff"] for r in have],
                    y=[r[key] for r in have],
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": [r[f"{key}_ci"][1] - r[key] for r in have],
                        "arrayminus": [r[key] - r[f"{key}_ci"][0] for r in have],
                    },
                    mode="lines+markers",
                    name=f"layer {layer}",
                    legendgroup=str(layer),
                    showlegend=col == 1,
                    customdata=[r["coeff_norm_units"] for r in have],
                    hovertemplate="coeff %{x} (%{customdata:.2f} x resid norm)<br>%{y:.3f}",
                ),
                row=1,
                col=col,
            )
            ov = overshoot.get(layer, {})
            for mark, (_, symbol) in MARKS.items():
                xs = [r["coeff"] for r in have]
                if ov.get(mark) is not None and ov[mark] in xs:
                    y = have[xs.index(ov[mark])][key]
                    curves.add_trace(
                        go.Scatter(
                            x=[ov[mark]],
                            y=[y],
                            mode="markers",
                            name=f"{mark} (layer {layer})",
                            marker={"symbol": f"{symbol}-open", "size": 14},
                            legendgroup=str(layer),
                            showlegend=False,
                        ),
                        row=1,
                        col=col,
                    )
    curves.add_hline(y=_damage_limit(data), line_dash="dash", row=1, col=2)
    coeffs = sorted({float(r["coeff"]) for r in data["rows"]})
    if _wide(coeffs):
        curves.update_xaxes(type="log" if min(coeffs) > 0 else "linear")
    units = data["config"]["units"]
    curves.update_xaxes(title_text=f"coefficient ({units} units)")
    curves.update_yaxes(title_text=f"{data['effect']['label']} (absolute)", row=1, col=1)
    curves.update_yaxes(title_text="off-target perplexity ratio", row=1, col=2)
    curves.update_layout(height=420, title="effect and damage against coefficient")
    heat = make_subplots(
        rows=1, cols=2, subplot_titles=("effect", "damage"), horizontal_spacing=0.15
    )
    for col, key in ((1, "effect"), (2, "damage")):
        layers, cs, grid = _grid(data, key)
        span = robust_range([v for row in grid for v in row if v is not None])
        heat.add_trace(
            go.Heatmap(
                z=grid,
                x=[f"{c:g}" for c in cs],
                y=[str(x) for x in layers],
                colorscale="Viridis" if key == "effect" else "Magma",
                colorbar={"x": 0.43 if col == 1 else 1.0},
                zmin=span[0] if span else None,
                zmax=span[1] if span else None,
                texttemplate="%{z:.2g}",
            ),
            row=1,
            col=col,
        )
    heat.update_xaxes(title_text=f"coefficient ({units} units)")
    heat.update_yaxes(title_text="layer")
    heat.update_layout(height=300 + 30 * len(_by_layer(data)), title="layer x coefficient")
    return [curves, heat]


def figures_html(figures: list[go.Figure], include_js: bool = True, first_id: int = 0) -> str:
    """HTML fragments of ``figures``; plotly.js inline once (before the first) if asked.

    Figures get the ids ``wb-figure-<first_id + i>`` (fixed, so a report renders the same
    bytes every time; give distinct ``first_id`` values for several calls on one page).
    """
    parts = []
    for i, fig in enumerate(figures):
        parts.append(
            fig.to_html(
                full_html=False,
                include_plotlyjs=bool(include_js and i == 0),
                div_id=f"wb-figure-{first_id + i}",
                config={"displaylogo": False},
            )
        )
    return "\n".join(parts)


def standalone_html(title: str, figures: list[go.Figure]) -> str:
    """A complete offline HTML page with ``figures``."""
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body>{figures_html(figures)}</body></html>"
    )


def write_sweep_plots(data: dict[str, Any], folder: str | os.PathLike[str]) -> dict[str, str]:
    """``effect_damage.png``, ``heatmap.png`` and ``sweep.html`` in ``folder``."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "effect_damage_png": (out / "effect_damage.png", sweep_png(data)),
        "heatmap_png": (out / "heatmap.png", heatmap_png(data)),
    }
    for path, png in files.values():
        with atomic_path(path) as tmp:
            tmp.write_bytes(png)
    html = standalone_html("sweep", sweep_figures(data))
    with atomic_path(out / "sweep.html") as tmp:
        tmp.write_text(html, encoding="utf-8")
    return {**{k: str(p) for k, (p, _) in files.items()}, "html": str(out / "sweep.html")}


# --------------------------------------------------------------------------- compose


def _matrix(values: list[list[float | None]]) -> list[list[float]]:
    return [[float("nan") if v is None else float(v) for v in row] for row in values]


def compose_png(data: dict[str, Any]) -> bytes:
    """Retention bars, interference and cosine matrices."""
    labels = [v["label"] for v in data["vectors"]]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), layout="constrained")
    axes[0].bar(labels, data["retention"], color="tab:blue")
    axes[0].axhline(1.0, ls="--", color="grey", lw=1)
    axes[0].set_title("retention (combined / alone)")
    for ax, key, title, cmap in (
        (axes[1], "interference", "interference (row i with column j)", "coolwarm"),
        (axes[2], "cosine", "cosine (same layer)", "coolwarm"),
    ):
        m = _matrix(data[key])
        im = ax.imshow(m, cmap=cmap, vmin=-1, vmax=1)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_title(title)
        for i, row in enumerate(m):
            for j, v in enumerate(row):
                text = "n/a" if v != v else f"{v:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8, path_effects=_halo)
        fig.colorbar(im, ax=ax)
    return _png(fig)


def compose_figures(data: dict[str, Any]) -> list[go.Figure]:
    """Interactive twins of :func:`compose_png`."""
    labels = [v["label"] for v in data["vectors"]]
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=(
            "retention (combined / alone)",
            "interference (row i with column j)",
            "cosine (same layer)",
        ),
        horizontal_spacing=0.14,
    )
    fig.add_trace(
        go.Bar(
            x=labels,
            y=data["retention"],
            name="retention",
            text=[f"{r:.2f}" for r in data["retention"]],
            textposition="outside",
        ),
        row=1,
        col=1,
    )
    fig.add_hline(y=1.0, line_dash="dash", line_color="grey", row=1, col=1)
    for col, key in ((2, "interference"), (3, "cosine")):
        z = data[key]
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=labels,
                y=labels,
                zmin=-1,
                zmax=1,
                colorscale="RdBu",
                showscale=col == 3,
                text=[["n/a" if v is None else f"{v:.2f}" for v in row] for row in z],
                texttemplate="%{text}",
                hovertemplate="row %{y}<br>column %{x}<br>%{text}<extra></extra>",
            ),
            row=1,
            col=col,
        )
    fig.update_xaxes(tickangle=-30, automargin=True)
    fig.update_yaxes(automargin=True)
    fig.update_yaxes(title_text="retention", row=1, col=1)
    fig.update_xaxes(title_text="partner j", row=1, col=2)
    fig.update_yaxes(title_text="vector i", row=1, col=2)
    fig.update_layout(height=440, title="composition", margin={"b": 90})
    return [fig]
