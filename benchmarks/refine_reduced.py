"""A reduced run of the `quality/refine` rows for a shared machine (sizes on the command line):

    PYTHONPATH=. python benchmarks/refine_reduced.py OUT.json DEVICE OBJECT_SIZE N_TRAIN N_TEST TRAIN_EPOCHS [FILTER_SCALE [DOSE]]
"""
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from benchmarks import cases_refine as cr
from benchmarks.common import Context

out, device, size, ntr, nte, ep = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
fs = int(sys.argv[7]) if len(sys.argv) > 7 else 2
doses = (float(sys.argv[8]),) if len(sys.argv) > 8 else None
t = time.time()
ctx = Context(quick=False, threads=0, workdir=Path("/tmp"), device=device)
rec = cr.reduced(object_size=size, n_train=ntr, n_test=nte, train_epochs=ep, n_filters_scale=fs)
if doses is not None:
    rec = replace(rec, doses=doses)
res = []
keep: dict = {}
for dose in rec.doses:
    for r in cr.run_recipe(ctx, replace(rec, doses=(dose,)), keep=keep):
        res.append({"name": r.name, "seconds": r.stats.median_s, "role": r.role, "description": r.description, **r.metrics})
        print(f"{r.name:40s} {r.stats.median_s:8.2f}s amp {r.metrics['amplitude_ssim']:.3f} phase {r.metrics['phase_ssim']:.3f}", flush=True)
    if keep.get("done"):
        np.savez(Path(out).with_suffix(".npz"), **{k: v for k, v in keep.items() if k != "done"})
    Path(out).write_text(json.dumps({"recipe": asdict(rec), "device": device, "rows": res, "total_s": time.time() - t}, indent=1))
print("total", time.time() - t)
