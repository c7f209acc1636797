"""Training workflow: `train(scan, model_config, data_config, train_config, out_dir=...)`.

    import ptychopinn as pp
    result = pp.train("train.npz", pp.ModelConfig(gridsize=2), pp.DataConfig(gridsize=2),
                      pp.TrainConfig(epochs=10), out_dir="model")
    result.model, result.history

Modules: `loop` (`train`, the epoch loop), `setup` (checked inputs, model, optimiser, the `Run`),
`checkpoint` (`TrainingState` and its files: checkpoint/, metrics.jsonl, the final model), `ddp`
(shards, global loss, rank-0 writes), `early_stop`, `best`, `schedules`, `loggers`, `losses`.

`train_step(optimizer, micro_batches, loss_of, ...)` (module `step`) is one optimiser step over
micro-batches (accumulation, clipping, AMP scaler, DDP no_sync), reusable by fine-tuning code.

The package module itself is callable (forwards to `train`), so `pp.train(...)` works even after
`import ptychopinn.train` has bound the submodule to the name `ptychopinn.train`.
"""
from __future__ import annotations

from ptychopinn._lazy import make_callable

from .checkpoint import CHECKPOINT_DIR, METRICS_FILE
from .loop import TrainResult, train
from .setup import ADAM_EPS
from .step import train_step

make_callable(__name__, "train")

__all__ = ["train", "train_step", "TrainResult", "CHECKPOINT_DIR", "METRICS_FILE", "ADAM_EPS"]
