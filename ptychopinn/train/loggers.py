"""Per-epoch metrics loggers (`TrainConfig.logger`): csv, tensorboard, mlflow, none.

Every logger receives the rows `train` appends to `metrics.jsonl` (epoch, stage, loss,
val_loss, lr, parts, patterns_per_s, seconds) and writes them under the model directory:

- "csv" (default): `metrics.csv`, one row per epoch, the loss parts as `loss_<name>` columns;
- "tensorboard": event files in `tensorboard/` (scalars `loss/train`, `loss/val`, `lr`,
  `loss_parts/<name>`, `throughput/patterns_per_s`; step = epoch), written with the
  `tensorboard` package's own event writer (`pip install 'ptychopinn[tensorboard]'`);
- "mlflow": one MLflow run (params = the training config, metrics per epoch), tracking to
  `MLFLOW_TRACKING_URI` or `file:<model dir>/mlruns` (`pip install 'ptychopinn[mlflow]'`);
- "none".

TensorBoard and MLflow are imported only when chosen; neither is needed to load or run a model.
On `--resume` each logger drops what the interrupted run logged past the checkpoint.
"""
from __future__ import annotations

import csv
import importlib.util
import io
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError

CSV_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
MLFLOW_DIR = "mlruns"
#: loss parts that always get a CSV column (others seen in the first row are added)
PART_NAMES = ("nll", "mae", "realspace")
_NEEDS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}


def check_available(kind: str) -> None:
    """ConfigError naming the pip install when the logger's package is missing."""
    if kind in _NEEDS:
        module, extra = _NEEDS[kind]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"--logger {kind} needs the {module} package: pip install 'ptychopinn[{extra}]'")


class Logger:
    """No-op base: `log_epoch(row)` after each epoch, `close()` at the end, `state()` for the checkpoint."""

    def log_epoch(self, row: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass

    def state(self) -> dict[str, Any]:
        return {}


class CSVLogger(Logger):
    """`metrics.csv`: epoch, stage, loss, val_loss, lr, loss_<part>..., patterns_per_s, seconds."""

    def __init__(self, out_dir: Path, epochs_done: int) -> None:
        self.path = out_dir / CSV_FILE
        self.columns: list[str] | None = None
        if self.path.is_file():  # resume: keep the header and the first `epochs_done` rows
            from ..io.atomic import atomic_write

            lines = self.path.read_text(encoding="utf-8").splitlines()
            if lines:
                self.columns = next(csv.reader([lines[0]]))
            with atomic_write(self.path, "w") as fh:
                fh.write("".join(line + "\n" for line in lines[: 1 + epochs_done]))

    def log_epoch(self, row: dict[str, Any]) -> None:
        parts = row.get("parts", {})
        if self.columns is None:
            names = list(PART_NAMES) + sorted(set(parts) - set(PART_NAMES))
            self.columns = ["epoch", "stage", "loss", "val_loss", "lr", *[f"loss_{n}" for n in names], "patterns_per_s", "seconds"]
            with open(self.path, "w", encoding="utf-8", newline="") as fh:
                csv.writer(fh).writerow(self.columns)
        values = {**row, **{f"loss_{k}": v for k, v in parts.items()}}
        buf = io.StringIO()
        csv.writer(buf).writerow(["" if values.get(c) is None else values[c] for c in self.columns])  # floats as repr
        with open(self.path, "a", encoding="utf-8", newline="") as fh:
            fh.write(buf.getvalue())
            fh.flush()
            os.fsync(fh.fileno())


def _scalars(row: dict[str, Any]) -> dict[str, float]:
    out = {"loss/train": row["loss"], "lr": row["lr"], "throughput/patterns_per_s": row["patterns_per_s"]}
    if row.get("val_loss") is not None:
        out["loss/val"] = row["val_loss"]
    for k, v in row.get("parts", {}).items():
        out[f"loss_parts/{k}"] = v
    return {k: float(v) for k, v in out.items()}


class TensorBoardLogger(Logger):
    """Event files under `tensorboard/`, one scalar per metric and epoch (step = epoch)."""

    def __init__(self, out_dir: Path, epochs_done: int) -> None:
        # tensorboard's own protos and record writer on a plain file: its EventFileWriter (and
        # torch.utils.tensorboard) would import all of TensorFlow when it is installed (~4-7 s);
        # lazy: an optional extra
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._event, self._summary = event_pb2, summary_pb2
        logdir = out_dir / TENSORBOARD_DIR
        logdir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        name = f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.{os.getpid()}.{epochs_done}"
        self.path = logdir / name
        self.writer = RecordWriter(open(self.path, "wb"))
        self._write(event_pb2.Event(wall_time=now, file_version="brain.Event:2"))
        if epochs_done:  # readers drop the interrupted run's events from this step on
            self._write(event_pb2.Event(wall_time=now, step=epochs_done + 1, session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))

    def _write(self, event: Any) -> None:
        self.writer.write(event.SerializeToString())
        self.writer.flush()

    def log_epoch(self, row: dict[str, Any]) -> None:
        values = [self._summary.Summary.Value(tag=k, simple_value=v) for k, v in _scalars(row).items()]
        self._write(self._event.Event(wall_time=time.time(), step=int(row["epoch"]), summary=self._summary.Summary(value=values)))

    def close(self) -> None:
        self.writer.close()


class MLflowLogger(Logger):
    """One MLflow run per training run (continued on resume): params, then metrics per epoch."""

    def __init__(self, out_dir: Path, epochs_done: int, params: dict[str, Any], state: dict[str, Any]) -> None:
        import mlflow  # lazy: an optional extra

        self.mlflow = mlflow
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            mlflow.set_tracking_uri((out_dir / MLFLOW_DIR).resolve().as_uri())
        run_id = state.get("run_id")
        self.run = mlflow.start_run(run_id=run_id) if run_id else mlflow.start_run(run_name=out_dir.name)
        if not run_id:
            mlflow.log_params({k: str(v) for k, v in params.items()})

    def log_epoch(self, row: dict[str, Any]) -> None:
        self.mlflow.log_metrics(_scalars(row), step=int(row["epoch"]))

    def close(self) -> None:
        self.mlflow.end_run()

    def state(self) -> dict[str, Any]:
        return {"run_id": self.run.info.run_id}


def make_logger(kind: str, out_dir: Path | None, epochs_done: int, params: dict[str, Any], state: dict[str, Any] | None = None) -> Logger:
    """The logger `kind` writing under `out_dir` (a no-op logger when `out_dir` is None)."""
    if out_dir is None or kind == "none":
        return Logger()
    check_available(kind)
    out_dir.mkdir(parents=True, exist_ok=True)
    if kind == "csv":
        return CSVLogger(out_dir, epochs_done)
    if kind == "tensorboard":
        return TensorBoardLogger(out_dir, epochs_done)
    if kind == "mlflow":
        return MLflowLogger(out_dir, epochs_done, params, state or {})
    raise ConfigError(f"unknown logger {kind!r}")


__all__ = ["make_logger", "check_available", "Logger", "CSVLogger", "TensorBoardLogger", "MLflowLogger", "CSV_FILE", "TENSORBOARD_DIR"]
