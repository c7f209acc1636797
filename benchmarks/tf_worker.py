"""TensorFlow side of the benchmarks, run as `python -m benchmarks.tf_worker DIR` (never imports torch).

DIR holds `tasks.json` (`{"threads": T, "tasks": [...]}`) and `in.npz` (the input arrays, named
by the tasks). Writes `out.json` (`{"tf_version", "results": [...]}`, one entry per task with
`stats` = `timing.Stats.as_dict()` or `error`) and `out.npz` (outputs for parity checks).

Task kinds: translate, extract, stitch, inference, train_step, train, reconstruct (see `tasks` in `main`).
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _weights(arrays: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    keys = sorted((k for k in arrays if k.startswith(prefix)), key=lambda k: int(k[len(prefix):]))
    return [arrays[k] for k in keys]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0])
    spec = json.loads((folder / "tasks.json").read_text())
    with np.load(folder / "in.npz") as z:
        arrays = {k: z[k] for k in z.files}

    import tensorflow as tf

    from ptychopinn.config import ModelConfig

    from . import tf_reference as ref
    from .timing import measure

    ref.tf_threads(int(spec.get("threads", 0)))

    def timed(fn: Callable[[], Any], task: dict[str, Any]) -> dict[str, Any]:
        st = measure(fn, warmup=int(task.get("warmup", 1)), repeats=int(task.get("repeats", 5)),
                     min_repeat_s=float(task.get("min_repeat_s", 0.05)), budget_s=task.get("budget_s"))
        return st.as_dict()

    outputs: dict[str, np.ndarray] = {}

    def translate(task):
        images = tf.constant(arrays[task["images"]])
        shifts = tf.constant(arrays[task["shifts"]].astype(np.float32))
        fn = tf.function(ref.tf_translate_complex)
        outputs[task["name"]] = fn(images, shifts).numpy()
        return {"stats": timed(lambda: fn(images, shifts).numpy(), task)}

    def extract(task):
        canvas = tf.constant(arrays[task["canvas"]])
        pos = tf.constant(arrays[task["positions"]].astype(np.float32))
        size = int(task["size"])
        fn = tf.function(lambda c, p: ref.tf_extract_patches(c, p, size))
        outputs[task["name"]] = fn(canvas, pos).numpy()
        return {"stats": timed(lambda: fn(canvas, pos).numpy(), task)}

    def stitch(task):
        patches = tf.constant(arrays[task["patches"]])
        off = arrays[task["offsets"]]
        M = int(task.get("M", 20))
        outputs[task["name"]] = ref.reassemble_position_tf(patches, off, M).numpy()
        return {"stats": timed(lambda: ref.reassemble_position_tf(patches, off, M).numpy(), task)}

    def _model(task) -> "ref.TFPtychoPINN":
        cfg = ModelConfig(**task["config"])
        return ref.TFPtychoPINN(cfg, _weights(arrays, task["weights"]), arrays[task["probe"]], float(task["intensity_scale"]))

    def inference(task):
        m = _model(task)
        x = tf.constant(arrays[task["x"]])
        p = tf.constant(arrays[task["positions"]])
        fn = m.predict_fn()
        outputs[task["name"] + "/object"] = fn(x, p).numpy()
        if task.get("forward_parity"):
            _, amp, _ = m.forward(x, p)
            outputs[task["name"] + "/amplitude"] = amp.numpy()
        return {"stats": timed(lambda: fn(x, p).numpy(), task)}

    def train_step(task):
        m = _model(task)
        x = tf.constant(arrays[task["x"]])
        p = tf.constant(arrays[task["positions"]])
        step = m.train_step_fn(float(task.get("learning_rate", 1e-3)))
        first = float(step(x, p).numpy())  # also the first warm-up call
        return {"stats": timed(lambda: step(x, p).numpy(), task), "first_loss": first}

    def train(task):
        m = _model(task)
        X, P = arrays[task["x"]], arrays[task["positions"]]
        step = m.train_step_fn(float(task.get("learning_rate", 1e-3)))
        bs, epochs = int(task["batch_size"]), int(task["epochs"])
        rng = np.random.default_rng(int(task.get("seed", 0)))
        n = X.shape[0]
        # keep_last: also step on the last partial batch (as `ptychopinn train` does)
        stop = n if task.get("keep_last") else n - bs + 1
        warm_s = 0.0
        if task.get("trace_first"):  # trace the step for every batch shape first (not timed)
            tw = time.perf_counter()
            for size in sorted({bs, n % bs} - {0} if task.get("keep_last") else {bs}):
                step(tf.constant(X[:size]), tf.constant(P[:size])).numpy()
            warm_s = time.perf_counter() - tw
        history = []
        t0 = time.perf_counter()
        for _ in range(epochs):
            order = rng.permutation(n)
            losses = []
            for s in range(0, stop, bs):
                b = order[s : s + bs]
                losses.append(float(step(tf.constant(X[b]), tf.constant(P[b])).numpy()))
            history.append(float(np.mean(losses)))
        seconds = time.perf_counter() - t0
        for i, w in enumerate(m.keras_weights()):
            outputs[f"{task['name']}/w{i}"] = w
        return {"seconds": seconds, "history": history, "warmup_s": warm_s}

    def reconstruct(task):
        # inference over all groups in batches + TF reassemble_position of the object patches
        m = _model(task)
        X, P = arrays[task["x"]], arrays[task["positions"]]
        centres = arrays[task["centres"]]
        bs, M = int(task["batch_size"]), int(task.get("M", 20))
        fn = m.predict_fn()
        n = X.shape[0]

        def run():
            parts = [fn(tf.constant(X[s : s + bs]), tf.constant(P[s : s + bs])) for s in range(0, n, bs)]
            return ref.reassemble_position_tf(tf.concat(parts, axis=0), centres, M).numpy()

        for size in sorted({min(bs, n), n % bs} - {0}):  # trace every batch shape (not timed)
            fn(tf.constant(X[:size]), tf.constant(P[:size])).numpy()
        outputs[task["name"] + "/object"] = run()
        return {"stats": timed(run, task)}

    tasks = {"translate": translate, "extract": extract, "stitch": stitch, "inference": inference,
             "train_step": train_step, "train": train, "reconstruct": reconstruct}
    results = []
    for task in spec["tasks"]:
        try:
            res = tasks[task["kind"]](task)
        except Exception as exc:  # report, keep going with the other tasks
            traceback.print_exc(file=sys.stderr)
            res = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
        res["name"] = task["name"]
        results.append(res)
    np.savez(folder / "out.npz", **outputs)
    versions = ref.tf_versions()
    (folder / "out.json").write_text(json.dumps({**versions, "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
