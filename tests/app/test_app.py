"""The dashboard, driven by Streamlit's AppTest on the tiny model: every page renders, each
button shows what the library returns for the same inputs, and bad input is a readable error."""

from __future__ import annotations

import argparse
import base64
import html
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from app.widgets import UNEXPECTED
from workbench.activations.store import ActivationStore
from workbench.commands import app as app_command
from workbench.decompose.fit import evaluate_heldout, heldout_docs
from workbench.errors import WorkbenchError
from workbench.measure.token_effects import token_logprob_changes
from workbench.model.load import Model
from workbench.steer.generate import side_by_side
from workbench.steer.plan import SteeringPlan
from workbench.steer.sampling import ACTADD_SAMPLING
from workbench.vectors.build import from_prompts

MAIN = Path(__file__).resolve().parents[2] / "app" / "main.py"
PAGES = {
    "data": "views/1_model_and_data.py",
    "decompose": "views/2_decompose.py",
    "learn": "views/2_learn_vectors.py",
    "steer": "views/3_steer.py",
    "overshoot": "views/4_overshoot.py",
    "compose": "views/5_compose.py",
}


@pytest.fixture
def at(tiny_model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """The app pointed at the tiny model (already loaded in this process), writing to tmp."""
    monkeypatch.setenv("WORKBENCH_APP_MODEL", tiny_model.name)
    monkeypatch.setenv("WORKBENCH_APP_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("WORKBENCH_APP_ROOT", str(tmp_path))  # the workspace root
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    test = AppTest.from_file(str(MAIN), default_timeout=60)
    test.run()
    _ok(test)
    return test


def _ok(at: AppTest) -> None:
    """No exception and no error message on the page."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _errors(at: AppTest) -> list[str]:
    assert not at.exception, [e.value for e in at.exception]
    messages = [str(e.value) for e in at.error]
    assert not any(m.startswith(UNEXPECTED) for m in messages), messages
    return messages


def _open(at: AppTest, page: str) -> AppTest:
    at.switch_page(PAGES[page]).run()
    _ok(at)
    return at


def _array(values: list[float] | dict[str, str]) -> np.ndarray:
    """A plotly array from chart JSON: a list, or plotly's base64 ``{"dtype", "bdata"}``."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
    return np.asarray(values)


def _boxes(at: AppTest, kind: str) -> list[str]:
    """Bodies of the completion boxes of ``kind`` (steered, unsteered, sample)."""
    return [h.proto.body for h in at.get("html") if f"wb-{kind}" in h.proto.body]


def test_every_page_renders_its_controls(at: AppTest) -> None:
    assert at.title[0].value == "Steering workbench"  # the landing page: the five steps
    assert len(at.get("page_link")) == 6
    _open(at, "data")
    assert at.selectbox(key="model_pick").value == at.session_state["model_name"]
    assert at.button(key="data_capture").label == "Capture"
    assert at.multiselect(key="data_layers").value == [2]  # middle of 4 layers
    assert at.checkbox(key="data_overwrite").value is False  # never replace a store by default
    _open(at, "decompose")
    assert any("No activation store yet" in str(i.value) for i in at.info)
    _open(at, "learn")
    assert at.selectbox(key="learn_method").value == "melbo"
    assert at.text_input(key="learn_target").value == "3"  # source 2 of 4 layers, then 3
    _open(at, "steer")
    assert at.text_input(key="steer_prompt").value == "I hate you because"
    assert at.slider(key="steer_coeff_raw").value == 5.0
    assert at.radio(key="steer_vec_src").options[:3] == [
        "Prompt pair",
        "Two text sets",
        "Saved file",
    ]
    assert at.number_input(key="steer_n").value == 4
    assert at.number_input(key="steer_tokens").value == 24
    _open(at, "overshoot")
    assert at.text_input(key="ov_coeffs").value == "0, 1, 2, 4, 8, 16"
    assert at.button(key="ov_go").label == "Run sweep"
    _open(at, "compose")
    assert at.button(key="cmp_add").label == "Add to plan"


def test_steer_fills_both_columns_with_the_library_output(at: AppTest, tiny_model: Model) -> None:
    _open(at, "steer")
    at.text_input(key="steer_prompt").set_value("The weather today")
    at.number_input(key="steer_n").set_value(2)
    at.number_input(key="steer_tokens").set_value(6)
    at.button(key="steer_go").click().run()
    _ok(at)
    plain, steered = _boxes(at, "unsteered"), _boxes(at, "steered")
    assert len(plain) == 2 and len(steered) == 2
    assert [h.value for h in at.markdown if h.value.startswith("####")] == [
        "#### Unsteered",
        "#### Steered",
    ]
    # The same call the CLI makes gives the same texts.
    vec = from_prompts(tiny_model, "Love", "Hate", layers=0)
    plan = SteeringPlan.of(vec, 5.0, layers=[0])
    settings = replace(ACTADD_SAMPLING, max_new_tokens=6, seed=0)
    want = side_by_side(tiny_model, "The weather today", plan, n=2, sampling=settings)
    for body, text in zip(plain + steered, want["unsteered"] + want["steered"], strict=True):
        assert body.endswith(f"{html.escape(text)}</div>")
    assert want["steered"] != want["unsteered"]
    # The passage (prompt + first steered completion): one span per token, its change in nats.
    passage = next(h.proto.body for h in at.get("html") if "wb-passage" in h.proto.body)
    fx = token_logprob_changes(tiny_model, "The weather today" + want["steered"][0], plan)
    shown = re.findall(r'title="([+-][0-9.]+) nats', passage)
    assert shown == [f"{d:+.2f}" for d in fx.delta]


def test_coefficient_zero_leaves_every_token_unchanged(at: AppTest) -> None:
    _open(at, "steer")
    at.slider(key="steer_coeff_raw").set_value(0.0)
    at.number_input(key="steer_n").set_value(2)
    at.number_input(key="steer_tokens").set_value(5)
    at.button(key="steer_go").click().run()
    _ok(at)
    assert [b.replace("wb-steered", "") for b in _boxes(at, "steered")] == [
        b.replace("wb-unsteered", "") for b in _boxes(at, "unsteered")
    ]
    passage = next(h.proto.body for h in at.get("html") if "wb-passage" in h.proto.body)
    assert passage.count('title="+0.00 nats') == passage.count("<span title=") > 3
    assert any("Mean change +0.000 nats" in str(c.value) for c in at.caption)


def _disabled_because(at: AppTest, key: str) -> str:
    """The inline reason under the disabled button ``key``."""
    assert at.button(key=key).disabled
    return " ".join(str(c.value) for c in at.caption)


def test_bad_inputs_show_readable_errors(at: AppTest) -> None:
    _open(at, "steer")
    at.text_input(key="steer_prompt").set_value("   ").run()
    assert "the prompt is empty" in _disabled_because(at, "steer_go")
    assert not _boxes(at, "steered")
    at.text_input(key="steer_layer").set_value("99").run()
    assert any("layer 99 is outside" in m for m in _errors(at))
    at.text_input(key="steer_layer").set_value("x").run()
    assert any("layer 'x' is not a whole number" in m for m in _errors(at))
    at.text_input(key="steer_layer").set_value("0")

    at.text_input(key="steer_prompt").set_value("Hello").run()
    at.text_input(key="steer_vec_pos").set_value("")
    at.button(key="steer_go").click().run()
    assert any("a prompt is empty" in m for m in _errors(at))

    at.radio(key="steer_vec_src").set_value("Saved file").run()
    at.text_input(key="steer_vec_file").set_value("nowhere/v.safetensors")
    at.button(key="steer_go").click().run()
    assert any("vector file not found" in m for m in _errors(at))
    at.text_input(key="steer_vec_file").set_value("/nowhere/v.safetensors")
    at.button(key="steer_go").click().run()
    assert any("outside the workspace root" in m for m in _errors(at))

    _open(at, "data")
    at.multiselect(key="data_layers").set_value([]).run()
    assert "choose at least one layer (0 to 3)" in _disabled_because(at, "data_capture")

    _open(at, "overshoot")
    at.text_input(key="ov_coeffs").set_value("0, 2, lots")
    at.button(key="ov_go").click().run()
    assert any("'lots' is not a number" in m for m in _errors(at))

    _open(at, "data")
    before = at.session_state["model_name"]
    at.text_input(key="model_typed").set_value("/no/such/model").run()
    at.button(key="model_use").click().run()
    assert any("model path not found: /no/such/model" in m for m in _errors(at))
    assert at.session_state["model_name"] == before  # a failed load is never committed
    at.text_input(key="model_typed").set_value("").run()
    _ok(at)
    _open(at, "steer")  # every page still works on the session's model


def test_saved_vector_is_applied_at_its_own_layer(
    at: AppTest, tiny_model: Model, tmp_path: Path
) -> None:
    path = from_prompts(tiny_model, "Happy", "Sad", layers=3).save(tmp_path / "happy.safetensors")
    _open(at, "steer")
    at.radio(key="steer_vec_src").set_value("Saved file").run()
    at.text_input(key="steer_vec_file").set_value(str(path))
    at.number_input(key="steer_n").set_value(1)
    at.number_input(key="steer_tokens").set_value(4)
    at.button(key="steer_go").click().run()
    _ok(at)
    plan = at.session_state["steer_last"]["data"]["result"]["plan"]
    assert plan[0]["layers"] == [3] and plan[0]["position"] == "front"


def test_sweep_draws_effect_and_damage_with_samples(at: AppTest) -> None:
    _open(at, "overshoot")
    at.text_input(key="ov_coeffs").set_value("0, 4, 64")
    at.number_input(key="ov_np").set_value(2)
    at.number_input(key="ov_n").set_value(1)
    at.number_input(key="ov_tok").set_value(5)
    at.number_input(key="ov_ns").set_value(3)
    at.number_input(key="ov_nn").set_value(3)
    at.button(key="ov_go").click().run()
    _ok(at)
    charts = at.get("plotly_chart")
    assert len(charts) == 2
    curves = json.loads(charts[0].proto.spec)
    lines = [t for t in curves["data"] if t.get("mode") == "lines+markers"]
    assert [t["x"] for t in lines] == [[0.0, 4.0, 64.0], [0.0, 4.0, 64.0]]  # effect, damage
    data = at.session_state["overshoot_last"]["data"]
    assert lines[1]["y"] == [r["damage"] for r in data["rows"]]
    assert data["rows"][0]["damage"] == pytest.approx(1.0)  # coefficient 0 is the baseline
    # Norm ratio grows linearly with the coefficient; the diagnostic chart shows it.
    norms = json.loads(charts[1].proto.spec)["data"][0]["y"]
    assert norms[0] == 0.0 and norms[2] == pytest.approx(16 * norms[1])
    assert [m.label for m in at.metric][:3] == ["Onset", "Best", "Breakdown"]
    assert len(_boxes(at, "sample")) == 3 * 2  # 3 coefficients x 2 prompts


def test_compose_draws_retention_interference_and_cosine(at: AppTest) -> None:
    _open(at, "compose")
    at.button(key="cmp_add").click().run()  # 'Love' - 'Hate' at layer 0, sentiment
    _ok(at)
    at.text_input(key="cmp_vec_pos").set_value(" wedding")
    at.text_input(key="cmp_vec_neg").set_value(" ")
    at.text_input(key="cmp_layer").set_value("2")
    at.radio(key="cmp_metric").set_value("target words").run()
    at.button(key="cmp_add").click().run()
    _ok(at)
    at.number_input(key="cmp_np").set_value(2)
    at.number_input(key="cmp_n").set_value(1)
    at.number_input(key="cmp_tok").set_value(4)
    at.number_input(key="cmp_ns").set_value(3)
    at.number_input(key="cmp_nn").set_value(3)
    at.button(key="cmp_go").click().run()
    _ok(at)
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    kinds = [t["type"] for t in fig["data"]]
    assert kinds == ["bar", "heatmap", "heatmap"]
    data = at.session_state["compose_last"]["data"]
    assert fig["data"][0]["y"] == data["retention"]
    assert [row[i] for i, row in enumerate(data["interference"])] == [0.0, 0.0]
    assert data["cosine"][0][1] is None  # different layers: no cosine
    assert [v["layer"] for v in data["vectors"]] == [0, 2]


def test_capture_decompose_and_send_a_candidate_to_steering(at: AppTest, tmp_path: Path) -> None:
    _open(at, "data")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "".join(f"Document number {i} talks about topic {i % 3}.\n" for i in range(12))
    )
    at.radio(key="data_kind").set_value("File path").run()
    at.text_input(key="data_path").set_value(str(corpus)).run()
    at.number_input(key="data_limit").set_value(10)
    at.number_input(key="data_tokens").set_value(16)
    out = str(at.text_input(key="data_out").value)
    assert "corpus.txt" in out and out.endswith("resid_pre-L2")  # follows the corpus
    at.button(key="data_capture").click().run()
    _ok(at)
    path = at.session_state["store_path"]
    store = ActivationStore.open(path)
    assert store.layers == [2] and store.manifest["n_docs"] == 10
    assert store.docs()[3]["text"] == "Document number 3 talks about topic 0."
    assert any(f"Captured {store.n_rows:,} rows" in str(s.value) for s in at.success)
    assert at.get("progress"), "capture shows a progress bar"

    _open(at, "decompose")
    at.number_input(key="dec_k").set_value(3)
    at.button(key="dec_fit").click().run()
    _ok(at)
    fitted = at.session_state["dictionary"]
    assert fitted.scaler_ is not None and fitted.fit_stats_["input"]["max_norm_ratio"] == 3.0
    evr = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    assert len(evr[0]["y"]) == 3 and evr[1]["y"][-1] == pytest.approx(sum(evr[0]["y"]))
    assert sum("Component" in str(m.value) for m in at.markdown) == 3  # one card each
    # The quality shown is `workbench decompose`'s: held-out documents, spliced loss.
    q = evaluate_heldout(at.session_state["dictionary"], store, 2, heldout_docs(store))
    shown = {m.label: m.value for m in at.metric}
    assert shown["Variance explained (held out)"] == f"{q['fve']:.1%}"
    assert "…with the layer reconstructed" in shown

    at.selectbox(key="dec_umap_colour").set_value("component")
    at.number_input(key="dec_umap_n").set_value(40)
    at.button(key="dec_umap_go").click().run()
    _ok(at)
    specs = [json.loads(c.proto.spec)["data"][0] for c in at.get("plotly_chart")]
    umap = next(d for d in specs if d["type"] == "scattergl")
    assert len(_array(umap["x"])) == 40 == len(_array(umap["marker"]["color"]))
    assert umap["marker"]["colorbar"]["title"]["text"] == "component 0"

    # The map stays on the page when another button is pressed (redrawn from the cache).
    at.button(key="dec_rank").click().run()
    _ok(at)
    assert any(
        json.loads(c.proto.spec)["data"][0]["type"] == "scattergl" for c in at.get("plotly_chart")
    )
    found = at.session_state["decompose_candidates"]
    assert len(found.candidates) == 6  # both signs of 3 components
    keys = [(c.inert, -c.score) for c in found.candidates]
    assert keys == sorted(keys)
    top = found.candidates[0]
    assert top.suggested_coeff is not None and top.label.startswith(f"{top.name}: ")
    assert list(at.dataframe[0].value.columns)[:2] == ["name", "warning"]
    # A candidate over the damage budget is badged and is not sent without a warning.
    found.candidates[0] = replace(top, ppl_ratio=33.8)
    at.run()
    assert any("over the damage budget: perplexity x33.8" in str(e.value) for e in at.error)
    assert "tick “send anyway”" in _disabled_because(at, "dec_send")
    at.checkbox(key=f"dec_send_anyway_{top.name}").check().run()
    assert not at.button(key="dec_send").disabled
    found.candidates[0] = top
    at.run()
    at.button(key="dec_send").click().run()
    sent = at.session_state["send_to_steer"]
    assert sent in at.session_state["vector_library"] and sent.startswith(top.name)
    assert at.session_state["steer_units"] == "norm"
    # The candidate goes to the steer page at its calibrated coefficient.
    assert at.session_state["steer_coeff_norm"] == round(top.suggested_coeff, 2)

    at.switch_page(PAGES["steer"]).run()
    _ok(at)
    assert at.radio(key="steer_vec_src").value == "Kept or discovered"
    assert at.selectbox(key="steer_vec_kept").value == sent
    assert any(sent in str(i.value) for i in at.info)  # says the settings were set for it
    # Another vector: the candidate's layer, units and coefficient do not carry over.
    at.radio(key="steer_vec_src").set_value("Prompt pair").run()
    _ok(at)
    assert at.session_state["steer_units"] == "raw"
    assert at.text_input(key="steer_layer").value == "0"
    assert any("back to their defaults" in str(i.value) for i in at.info)


def test_workbench_app_command_binds_locally() -> None:
    ns = argparse.Namespace(port=8600, host="127.0.0.1", model=None, workdir=None)
    cmd = app_command.streamlit_command(ns)
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.port") + 1] == "8600"
    assert cmd[cmd.index("--server.headless") + 1] == "true"
    assert Path(cmd[cmd.index("run") + 1]) == MAIN
    with pytest.raises(WorkbenchError, match="not a port number"):
        app_command.streamlit_command(argparse.Namespace(port=0, host="127.0.0.1"))


def test_the_session_is_remembered_across_a_reload_and_cleared_on_request(
    at: AppTest, tiny_model: Model, tmp_path: Path
) -> None:
    """A new browser session (a reload, or the next `workbench app`) gets the last session's
    results and kept vectors back; "Clear session" forgets them, on disk too."""
    _open(at, "steer")
    at.text_input(key="steer_prompt").set_value("The weather today")
    at.number_input(key="steer_n").set_value(2)
    at.number_input(key="steer_tokens").set_value(4)
    at.button(key="steer_go").click().run()
    _ok(at)
    before = _boxes(at, "steered")
    assert len(before) == 2
    saved = tmp_path / "work" / "session" / "session.json"
    assert saved.is_file() and '"steer_last":' in saved.read_text()

    fresh = AppTest.from_file(str(MAIN), default_timeout=60)  # a new session: nothing in memory
    fresh.run()
    _open(fresh, "steer")
    _ok(fresh)
    assert _boxes(fresh, "steered") == before, "the reloaded page lost the steering result"

    fresh.button(key="session_clear").click().run()
    _ok(fresh)
    # what is saved now is the fresh session: no result, no vector file
    assert not saved.exists() or '"steer_last":' not in saved.read_text()
    assert not list((tmp_path / "work" / "session").glob("vectors/*"))
    again = AppTest.from_file(str(MAIN), default_timeout=60)
    again.run()
    _open(again, "steer")
    assert _boxes(again, "steered") == []


def test_session_values_round_trip_without_pickle(tiny_model: Model, tmp_path: Path) -> None:
    from app.history import Run
    from app.session_store import _decode, _encode, _Skip

    vec = from_prompts(tiny_model, "Love", "Hate", layers=1)
    plan = SteeringPlan.of(vec, 5.0, layers=[1])
    runs = [Run(1, "x", "m", True)]
    value = {"data": {"vector": vec, "pair": (1, "a"), "runs": runs, "plan": plan}}
    text = json.dumps(_encode(value, tmp_path))  # plain JSON; the vector is a safetensors file
    back = _decode(json.loads(text), tmp_path)
    assert back["data"]["pair"] == (1, "a") and back["data"]["runs"][0].label == "x"
    assert np.array_equal(back["data"]["vector"].directions[1], vec.directions[1])
    entry = back["data"]["plan"].entries[0]
    assert entry.coeff == 5.0 and entry.layers == [1] and entry.vector.method == "prompt_pair"
    with pytest.raises(_Skip):
        _encode({"f": object()}, tmp_path)
    # The dataclasses of a discovery come back field by field, and only listed ones are rebuilt.
    from workbench.decompose.component_stats import DocExample
    from workbench.decompose.trials import TrialSettings

    kept = {"doc": DocExample(3, 0.5, "a text", "peak"), "s": TrialSettings(damage_budget=1.5)}
    back = _decode(json.loads(json.dumps(_encode(kept, tmp_path))), tmp_path)
    assert back == kept
    forged = {"__dataclass__": "Popen", "fields": {"args": ["ls"]}}
    with pytest.raises(KeyError):
        _decode(forged, tmp_path)


def test_learn_vectors_without_labels_and_send_one_to_steering(at: AppTest) -> None:
    """The learned-vectors page runs `discover --method melbo`'s library call: candidates, the
    displacement against random directions with its interval, and a send at the calibrated
    coefficient; a source layer after the target disables the button with the reason."""
    _open(at, "learn")
    at.text_input(key="learn_source").set_value("3").run()
    at.text_input(key="learn_target").set_value("2").run()
    assert "must come before" in _disabled_because(at, "learn_run")
    at.text_input(key="learn_source").set_value("1").run()
    at.text_input(key="learn_target").set_value("3").run()
    at.number_input(key="learn_k").set_value(2)
    at.number_input(key="learn_iterations_melbo").set_value(3)
    at.button(key="learn_run").click().run()
    _ok(at)
    found = at.session_state["learn_found"]
    assert found.method == "melbo" and len(found.candidates) == 4 and found.layer == 1
    moved = found.extra["learned"]["displacement_vs_random"]
    shown = {m.label: m.value for m in at.metric}
    assert shown["Moves the target layer (x random)"] == f"{moved['ratio']:.3g}x"
    lo, hi = moved["ratio_ci"]
    assert shown["95% interval over prompts"] == f"{lo:.3g}-{hi:.3g}x"
    assert "between_doc_share" not in at.dataframe[0].value.columns  # no store statistics
    # A reload (a new browser session) gets the ranked candidates back from the saved session.
    fresh = AppTest.from_file(str(MAIN), default_timeout=60)
    fresh.run()
    _open(fresh, "learn")
    back = fresh.session_state["learn_found"]
    assert back.to_json() == found.to_json()
    assert torch.equal(
        back.candidates[0].vector.directions[1], found.candidates[0].vector.directions[1]
    )
    assert {m.label: m.value for m in fresh.metric} == shown
    assert list(fresh.dataframe[0].value["name"]) == [c.name for c in found.candidates]
    sendable = next(c for c in found.candidates if c.suggested_coeff is not None)
    at.selectbox(key="learn_pick").set_value(found.candidates.index(sendable)).run()
    at.button(key="learn_send").click().run()
    sent = at.session_state["send_to_steer"]
    assert sent == f"{sendable.name} (melbo, layer 1)"
    assert at.session_state["steer_coeff_norm"] == round(sendable.suggested_coeff, 2)
