"""Interop check: a vector exported here steers llama.cpp the way it steers the workbench.

Opt-in (``make interop``: it builds llama-cpp-python from source, which takes minutes). Steps:

1. Build a wedding-topic vector on the embedded SmolLM2 (mean difference of the built-in wedding
   and unrelated sentences at resid_pre ``LAYER``: one direction, as llama.cpp adds one).
2. Steer the workbench with it at coefficient ``COEFF`` (residual-norm units) and count wedding
   words in seeded completions of neutral prompts, against unsteered.
3. Export it with the coefficient folded in (``workbench vector export``), read the file back with
   the ``gguf`` package, and hand its ``direction.N`` tensors to llama.cpp through
   ``llama_apply_adapter_cvec`` in the buffer layout llama.cpp's own loader builds
   (``direction.N`` at offset ``(N - 1) x n_embd``); the embedded GGUF itself runs in llama.cpp.
4. In both engines: the shift of the next-token log-probability of " wedding" after each
   neutral prompt (steered minus unsteered, the sensitive measure), and wedding words in
   seeded completions with and without the vector.

Prints one JSON object; exits 1 if the log-prob shift's sign differs between the two.
"""

from __future__ import annotations

import ctypes
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from workbench.corpora import load_corpus
from workbench.measure.text_metrics import WEDDING_WORDS, target_word_rate
from workbench.model.embedded import embedded_gguf
from workbench.model.load import load_model
from workbench.steer.forward import steered_logits
from workbench.steer.generate import generate
from workbench.steer.plan import PlanEntry, SteeringPlan
from workbench.steer.sampling import Sampling
from workbench.vectors.build import from_datasets
from workbench.vectors.llamacpp import export_control_vector, read_control_vector

LAYER, COEFF, N_PROMPTS, SAMPLES, TOKENS = 6, 1.0, 8, 4, 24


def _rate(texts: list[str]) -> float:
    return float(np.mean([target_word_rate(t, WEDDING_WORDS) for t in texts]))


def main() -> int:
    import warnings

    import llama_cpp

    warnings.filterwarnings("ignore", category=DeprecationWarning)

    model = load_model("smollm2-135m")
    prompts = load_corpus("builtin:neutral_prompts", limit=N_PROMPTS)
    vec = from_datasets(
        model,
        load_corpus("builtin:wedding", limit=32),
        load_corpus("builtin:unrelated", limit=32),
        [LAYER],
        positions="mean",
    )
    sampling = Sampling(max_new_tokens=TOKENS, temperature=0.8, top_p=0.95, seed=0)
    entry = PlanEntry(vec, COEFF, units="norm", position="all", generated=True)
    ours_off = generate(model, prompts, None, n=SAMPLES, sampling=sampling).texts
    ours_on = generate(model, prompts, SteeringPlan([entry]), n=SAMPLES, sampling=sampling).texts

    with tempfile.TemporaryDirectory() as tmp:
        path = export_control_vector(vec, Path(tmp) / "wedding.gguf", coeff=COEFF, units="norm")
        directions, _ = read_control_vector(path)
    gguf_path = embedded_gguf("smollm2-135m")
    llm = llama_cpp.Llama(
        model_path=str(gguf_path), n_ctx=256, seed=0, logits_all=True, verbose=False
    )
    n_embd, n_layer = llm.n_embd(), llama_cpp.llama_model_n_layer(llm.model)
    buf = np.zeros(n_embd * n_layer, dtype=np.float32)
    for n, d in directions.items():
        buf[(n - 1) * n_embd : n * n_embd] = d

    def complete(steer: bool) -> list[str]:
        data = buf if steer else np.zeros_like(buf)
        ptr = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        rc = llama_cpp.llama_apply_adapter_cvec(llm.ctx, ptr, data.size, n_embd, 1, n_layer - 1)
        if rc != 0:
            raise RuntimeError(f"llama_apply_adapter_cvec returned {rc}")
        out = []
        for i, p in enumerate(prompts):
            for k in range(SAMPLES):
                llm.reset()
                r: Any = llm(p, max_tokens=TOKENS, temperature=0.8, top_p=0.95, seed=1000 * i + k)
                out.append(r["choices"][0]["text"])
        return out

    def cpp_logprob(steer: bool, token: int) -> np.ndarray:
        data = buf if steer else np.zeros_like(buf)
        ptr = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        llama_cpp.llama_apply_adapter_cvec(llm.ctx, ptr, data.size, n_embd, 1, n_layer - 1)
        out = []
        for p in prompts:
            llm.reset()
            llm.eval(llm.tokenize(p.encode("utf-8"), add_bos=True))
            z = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float64)  # (vocab,)
            out.append(z[token] - np.logaddexp.reduce(z))
        return np.array(out)

    def our_logprob(plan: SteeringPlan | None, token: int) -> np.ndarray:
        logits, _, mask = steered_logits(model, prompts, plan)
        last = mask.sum(1) - 1  # (prompts,)
        z = logits[range(len(prompts)), last].double()  # (prompts, vocab)
        return (z[:, token] - z.logsumexp(-1)).numpy()

    token = int(model.tokenizer(" wedding", add_special_tokens=False)["input_ids"][0])
    ours_shift = our_logprob(SteeringPlan([entry]), token) - our_logprob(None, token)
    cpp_shift = cpp_logprob(True, token) - cpp_logprob(False, token)
    cpp_off, cpp_on = complete(False), complete(True)
    result: dict[str, Any] = {
        "layer": {"ours": f"resid_pre {LAYER}", "llama.cpp": f"direction.{LAYER - 1}"},
        "coeff_norm_units": COEFF,
        "wedding_logprob_shift_nats": {
            "workbench": float(ours_shift.mean()),
            "llama.cpp": float(cpp_shift.mean()),
            "per_prompt_correlation": float(np.corrcoef(ours_shift, cpp_shift)[0, 1]),
        },
        "wedding_words_per_completion": {
            "workbench": {"unsteered": _rate(ours_off), "steered": _rate(ours_on)},
            "llama.cpp": {"unsteered": _rate(cpp_off), "steered": _rate(cpp_on)},
        },
        "samples": {"workbench": ours_on[:2], "llama.cpp": cpp_on[:2]},
    }
    result["same_direction"] = bool(np.sign(ours_shift.mean()) == np.sign(cpp_shift.mean()))
    print(json.dumps(result, indent=2))
    return 0 if result["same_direction"] else 1


if __name__ == "__main__":
    sys.exit(main())
