"""Benchmark the dictionaries (a script, not a test).

1. Streaming PCA over synthetic ``N x 576`` float16 stores written with the store writer (planted
   rank-32 structure plus noise), each fitted in a fresh process: rows/s and peak RSS growth
   above the process's size before the fit. Target: memory flat as N grows (it holds one shard
   plus one ``576 x 576`` float64 matrix, whatever N). The fit must find the planted subspace.
2. SAE training: ``SparseAutoencoder.fit`` against SAELens's own loop (``SAETrainer.fit`` with
   the same SAE config, trainer config and activations, ``normalize_activations="none"`` on both
   so neither spends batches on a norm estimate): rows/s and their ratio. Target: >= 0.9x.
3. Four dictionaries (pca, ica, dictlearn, sae) fitted from one capture of the default model,
   against capturing again for each: wall time ratio. Every capture must hold the same rows.

Usage: ``python benchmarks/bench_dictionaries.py [--pca-rows 250000,1000000]
[--sae-rows 200000] [--sae-width 1024] [--only pca,sae,four] [--smoke]``

``--smoke`` runs the same code at toy size: a 4,000-row store, a 64-wide SAE for a few steps,
and the four dictionaries on a tiny random model (seconds, no targets: toy sizes say nothing
about speed). Wrong results exit non-zero either way.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from child import run_child

WIDTH = 576
RANK = 32  # the planted structure of the synthetic stores
# Energy of the planted directions inside the fitted PCA subspace (1 = all of it; a random
# 32-dimensional subspace holds about 32/576 of it). Measured: 0.99999 at 4,000 rows.
MIN_CAPTURED = 0.99
SMOKE_SHARD_ROWS = 1000  # several shards even at toy size: the stream crosses shard borders


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"bench_dictionaries: wrong result: {what}")


def _planted_basis(width: int) -> tuple[torch.Generator, torch.Tensor]:
    """The seeded generator and the ``(RANK, width)`` planted directions it draws first."""
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(RANK, width, generator=g) * torch.linspace(8, 1, RANK)[:, None]
    return g, basis


# --------------------------------------------------------------------------- 1. streaming PCA


def write_store(path: Path, n_rows: int, width: int = WIDTH, shard_rows: int = 16384) -> Path:
    """A float16 store of ``n_rows`` synthetic rows (rank-32 signal + noise) at layer 0."""
    from workbench.activations.store import FORMAT, VERSION
    from workbench.activations.writer import RowBatch, StoreWriter

    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "model": "synthetic",
        "model_info": {},
        "site": "resid_post",
        "layers": [0],
        "positions": "all",
        "dtype": "float16",
        "width": width,
        "row_shape": [width],
        "bos": True,
        "backend": "hf",
        "batch_size": 1,
        "shard_rows": shard_rows,
        "max_tokens": None,
        "n_docs": 1,
        "corpus": {"source": "synthetic", "n_docs": 1},
        "corpus_sha256": "",
        "truncation": {"limit": 1, "n_truncated": 0, "action": "", "docs": []},
    }
    writer = StoreWriter.create(
        path, manifest, [{"doc": 0, "text": "", "n_tokens": 1, "offsets": []}]
    )
    g, basis = _planted_basis(width)  # (RANK, d)
    for start in range(0, n_rows, shard_rows):
        n = min(shard_rows, n_rows - start)
        X = torch.randn(n, RANK, generator=g) @ basis + torch.randn(n, width, generator=g)  # (n, d)
        zeros = torch.zeros(n, dtype=torch.long)
        writer.add(
            RowBatch(
                acts={0: X.half()},
                doc=zeros,
                pos=zeros + 1,
                token=zeros,
                row_norm=X.norm(dim=1, keepdim=True).double(),
                resid_sum=X.norm(dim=1, keepdim=True).double(),
                resid_count=torch.ones(n, dtype=torch.long),
            )
        )
    writer.finish()
    return path


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pca_child(path: str) -> None:
    """Fit streaming PCA on the store at ``path``; print one JSON line (run in a fresh process)."""
    from workbench.activations.store import ActivationStore
    from workbench.decompose.fit import fit_from_store, make_dictionary

    store = ActivationStore.open(path)
    pca = make_dictionary("pca", RANK)
    before = _status_mib("VmRSS")
    start = time.perf_counter()
    fit_from_store(pca, store, 0)
    seconds = time.perf_counter() - start
    peak = _status_mib("VmHWM")
    # How much of the planted directions' energy the fitted (model-space) subspace holds.
    _, basis = _planted_basis(store.d_model)
    q, _ = torch.linalg.qr(torch.from_numpy(np.asarray(pca.directions_, np.float64)).T)  # (d, k)
    b = basis.double()  # (RANK, d)
    captured = float((b @ q).norm() ** 2 / b.norm() ** 2)
    print(
        json.dumps(
            {
                "rows": store.n_rows,
                "seconds": seconds,
                "rows_per_s": store.n_rows / seconds,
                "rss_before_mib": before,
                "peak_rss_mib": peak,
                "growth_mib": peak - before,
                "planted_energy_captured": captured,
            }
        )
    )


def _child(args: list[str], smoke: bool) -> dict[str, Any]:
    """This script's ``main`` with ``args`` in a fresh process (in this one when smoking)."""
    return run_child(__file__, main, args, smoke)


def pca_stream(
    sizes: list[int], tmp: Path, shard_rows: int = 16384, smoke: bool = False
) -> list[dict[str, Any]]:
    out = []
    for n in sizes:
        path = tmp / f"store-{n}"
        t = time.perf_counter()
        write_store(path, n, shard_rows=shard_rows)
        wrote = time.perf_counter() - t
        row = _child(["--pca-child", str(path), *(["--smoke"] if smoke else [])], smoke)
        row["write_seconds"] = wrote
        row["store_mib"] = sum(p.stat().st_size for p in path.iterdir()) / 2**20
        print(
            f"pca stream {n:>9,} rows: {row['rows_per_s']:>9,.0f} rows/s, peak RSS "
            f"{row['peak_rss_mib']:.0f} MiB (+{row['growth_mib']:.0f} MiB during the fit), "
            f"store {row['store_mib']:.0f} MiB, planted energy captured "
            f"{row['planted_energy_captured']:.3f}",
            flush=True,
        )
        captured = row["planted_energy_captured"]
        _check(
            captured >= MIN_CAPTURED, f"streaming PCA holds {captured:.3f} of the planted energy"
        )
        shutil.rmtree(path)
        out.append(row)
    return out


# --------------------------------------------------------------------------- 2. SAE training


def sae_vs_saelens(n_rows: int, d_sae: int, batch: int, smoke: bool = False) -> dict[str, Any]:
    from sae_lens import SAETrainer, StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig

    from dictionaries import SparseAutoencoder

    g = torch.Generator().manual_seed(1)
    atoms = torch.nn.functional.normalize(torch.randn(4 * WIDTH, WIDTH, generator=g), dim=1)
    codes = torch.rand(n_rows, 4 * WIDTH, generator=g) * (
        torch.rand(n_rows, 4 * WIDTH, generator=g) < 0.01
    )  # (n, atoms), ~1% active
    X = (codes @ atoms + 0.01 * torch.randn(n_rows, WIDTH, generator=g)).contiguous()  # (n, d)
    steps = n_rows // batch

    ours = SparseAutoencoder(
        n_components=d_sae,
        n_steps=steps,
        batch_size=batch,
        normalize_activations="none",
        random_state=0,
    )
    t = time.perf_counter()
    ours.fit(X)
    ours_s = time.perf_counter() - t
    _check(ours.fit_stats_["n_steps"] == steps, f"ours ran {ours.fit_stats_['n_steps']} steps")
    _check(ours.components_.shape == (d_sae, WIDTH), f"ours has atoms {ours.components_.shape}")
    _check(bool(np.isfinite(ours.components_).all()), "ours learned non-finite atoms")

    def provider() -> Any:
        while True:
            for start in range(0, n_rows - batch + 1, batch):
                yield X[start : start + batch]

    torch.manual_seed(0)
    sae = StandardTrainingSAE(
        StandardTrainingSAEConfig(
            d_in=WIDTH,
            d_sae=d_sae,
            l1_coefficient=1.0,
            dtype="float32",
            device="cpu",
            normalize_activations="none",
        )
    )
    cfg = SAETrainerConfig(
        total_training_samples=steps * batch,
        train_batch_size_samples=batch,
        lr=3e-4,
        lr_end=3e-4,
        lr_decay_steps=steps // 5,
        device="cpu",
        dead_feature_window=min(1000, max(10, steps // 10)),
        feature_sampling_window=steps,
    )
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=provider())
    t = time.perf_counter()
    trainer.fit()
    theirs_s = time.perf_counter() - t
    rows = steps * batch
    res = {
        "rows": rows,
        "steps": steps,
        "batch": batch,
        "d_sae": d_sae,
        "ours_rows_per_s": rows / ours_s,
        "saelens_rows_per_s": rows / theirs_s,
        "ratio": theirs_s / ours_s,
    }
    print(
        f"sae {rows:,} rows ({steps} steps of {batch}), d_sae {d_sae}: ours "
        f"{res['ours_rows_per_s']:,.0f} rows/s, SAELens SAETrainer.fit "
        f"{res['saelens_rows_per_s']:,.0f} rows/s, ratio {res['ratio']:.2f}x"
        + ("" if smoke else " (target >= 0.9)"),
        flush=True,
    )
    return res


# --------------------------------------------------------------------------- 3. four dictionaries

FOUR: dict[str, dict[str, Any]] = {
    "pca": {"n_components": 16},
    "ica": {"n_components": 16, "max_iter": 200},
    "dictlearn": {"n_components": 32, "max_iter": 2, "alpha": 1.0},
    "sae": {"n_components": 512, "n_steps": 150, "batch_size": 512},
}
FOUR_SMOKE: dict[str, dict[str, Any]] = {
    "pca": {"n_components": 4},
    "ica": {"n_components": 4, "max_iter": 50},
    "dictlearn": {"n_components": 8, "max_iter": 1, "alpha": 1.0},
    "sae": {"n_components": 32, "n_steps": 5, "batch_size": 64},
}


def four_dictionaries(
    model_name: str | None,
    n_docs: int,
    layer: int,
    max_tokens: int,
    tmp: Path,
    params: dict[str, dict[str, Any]] = FOUR,
) -> dict[str, Any]:
    import dictionaries
    from workbench.activations.capture import capture
    from workbench.activations.store import ActivationStore
    from workbench.corpora import load_corpus
    from workbench.decompose.fit import fit_from_store
    from workbench.model.load import load_model

    model = load_model() if model_name is None else load_model(model_name)
    docs = load_corpus("builtin:general", limit=n_docs)

    def grab(where: Path) -> tuple[ActivationStore, float]:
        t = time.perf_counter()
        capture(model, docs, [layer], max_tokens=max_tokens, out=where, progress_bar=False)
        return ActivationStore.open(where), time.perf_counter() - t

    def fit(store: ActivationStore, method: str) -> float:
        t = time.perf_counter()
        d = fit_from_store(dictionaries.create(method, **params[method]), store, layer)
        seconds = time.perf_counter() - t
        k = params[method]["n_components"]
        _check(d.components_.shape == (k, model.d_model), f"{method} has {d.components_.shape}")
        _check(bool(np.isfinite(d.components_).all()), f"{method} learned non-finite atoms")
        return seconds

    grab(tmp / "warm-up")  # first-call costs (kernels, tokenizer) are no part of either way
    start = time.perf_counter()
    store, cap_once = grab(tmp / "shared")
    fits = {m: fit(store, m) for m in params}
    shared = time.perf_counter() - start
    start = time.perf_counter()
    caps = []
    own = []
    for m in params:
        s, c = grab(tmp / f"own-{m}")
        caps.append(c)
        own.append(s)
        fit(s, m)
    separate = time.perf_counter() - start
    rows = store.load(layer)  # (n, d_model)
    _check(all(torch.equal(s.load(layer), rows) for s in own), "captures of one corpus differ")
    res = {
        "tokens": int(store.manifest["tokens"]),
        "layer": layer,
        "capture_s": cap_once,
        "fit_s": fits,
        "shared_s": shared,
        "separate_s": separate,
        "separate_captures_s": caps,
        "ratio": separate / shared,
    }
    print(
        f"four dictionaries on {res['tokens']:,} tokens at layer {layer}: one capture "
        f"{shared:.1f}s, a capture each {separate:.1f}s, ratio {res['ratio']:.2f}x "
        f"(capture {cap_once:.1f}s; fits "
        + ", ".join(f"{m} {s:.1f}s" for m, s in fits.items())
        + ")",
        flush=True,
    )
    return res


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pca-rows", default="250000,1000000")
    parser.add_argument("--sae-rows", type=int, default=200_000)
    parser.add_argument("--sae-width", type=int, default=1024, help="d_sae")
    parser.add_argument("--sae-batch", type=int, default=4096)
    parser.add_argument("--four-docs", type=int, default=200)
    parser.add_argument("--four-max-tokens", type=int, default=32)
    parser.add_argument("--only", default="pca,sae,four")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    parser.add_argument("--smoke", action="store_true", help="toy sizes, seconds, no targets")
    parser.add_argument("--pca-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        torch.set_num_threads(1)  # toy sizes only lose time syncing threads
    if args.pca_child:
        pca_child(args.pca_child)
        return
    only = set(args.only.split(","))
    results: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="bench-dict-") as tmp:
        if "pca" in only:
            if args.smoke:  # one size, fitted in this process (see _child)
                results["pca_stream"] = pca_stream([4000], Path(tmp), SMOKE_SHARD_ROWS, True)
            else:
                sizes = [int(x) for x in args.pca_rows.split(",")]
                results["pca_stream"] = pca_stream(sizes, Path(tmp))
        if "sae" in only:
            if args.smoke:
                results["sae"] = sae_vs_saelens(2048, 64, 256, smoke=True)
            else:
                results["sae"] = sae_vs_saelens(args.sae_rows, args.sae_width, args.sae_batch)
        if "four" in only:
            if args.smoke:
                from workbench.testing import make_tiny_model

                tiny = str(make_tiny_model(Path(tmp) / "tiny"))
                results["four"] = four_dictionaries(tiny, 16, 1, 32, Path(tmp), FOUR_SMOKE)
            else:
                results["four"] = four_dictionaries(
                    None, args.four_docs, 8, args.four_max_tokens, Path(tmp)
                )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, default=lambda x: float(np.asarray(x))))


if __name__ == "__main__":
    main()
