"""ZeroMQ input for live reconstruction: receive a frame stream into an SWMR spool file.

    ptychopinn-onnx MODEL.onnx SPOOL.h5 --follow --zmq tcp://127.0.0.1:5555 --out DIR
    python -m ptychopinn.interop.onnx.zmq_bridge tcp://127.0.0.1:5555 SPOOL.h5   # the bridge alone

The bridge connects a PULL socket to the sender's PUSH socket and writes what it receives into
`SPOOL.h5` with `ptychopinn.simulate.stream.LiveWriter` (the scan contract, SWMR); the follower
follows that file like any detector file. The spool is the record of the scan (and what the final
pass re-reads). Needs pyzmq (`pip install "ptychopinn[zmq]"`); numpy + h5py otherwise, no torch.

Protocol (multipart messages; the header is UTF-8 JSON, arrays are raw C-order bytes):

- `[{"type": "start", "shape": [N, N], "dtype": "complex64"}, probe]` first (optional header keys:
  `diffraction_units`, `bad_pixels_shape` with a third part holding an `(N, N)` uint8 mask);
- `[{"type": "frame", "x": px, "y": px, "shape": [N, N], "dtype": "float32"|"uint16"|...}, frame]`
  per frame (positions in object pixels);
- `[{"type": "end"}]` last: the spool gets `scan_complete` and the bridge exits 0.

Frames arriving together are written in one flush. Without a message for `timeout` seconds the
bridge closes the spool without `scan_complete` (the follower then ends by its idle timeout).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ptychopinn.errors import ConfigError, DataError, PtychoPINNError

__all__ = ["bridge", "send_scan", "start_bridge", "main"]


def _zmq() -> Any:
    try:
        import zmq  # optional extra
    except ImportError:
        raise ConfigError("--zmq needs the missing package 'pyzmq' (pip install pyzmq, or the [zmq] extra)") from None
    return zmq


def _check_url(url: str) -> None:
    if not url.startswith(("tcp://", "ipc://", "inproc://")):
        raise ConfigError(f"--zmq: expected an endpoint such as tcp://127.0.0.1:5555, got {url!r}")


def _array(header: Mapping[str, Any], payload: bytes, what: str) -> np.ndarray:
    try:
        dtype = np.dtype(str(header["dtype"]))
        shape = tuple(int(s) for s in header["shape"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"zmq {what} message: header needs 'dtype' and 'shape' ({exc})") from None
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(payload) != expected:
        raise DataError(f"zmq {what} message: {len(payload)} bytes, expected {expected} for shape {list(shape)} {dtype}")
    return np.frombuffer(payload, dtype=dtype).reshape(shape)


def bridge(url: str, spool: str | Path, *, timeout: float = 300.0, overwrite: bool = False, bind: bool = False) -> int:
    """Receive one scan from `url` into `spool`; returns the number of frames written."""
    from ptychopinn.simulate.stream import LiveWriter

    zmq = _zmq()
    _check_url(url)
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.LINGER, 0)
    (sock.bind if bind else sock.connect)(url)
    writer = None
    try:
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        deadline = time.monotonic() + timeout
        while True:
            if not poller.poll(timeout=100):
                if time.monotonic() >= deadline:
                    return 0 if writer is None else writer.frames
                continue
            deadline = time.monotonic() + timeout
            frames, xs, ys = [], [], []
            done = False
            while True:  # drain what is queued: one flush for frames that arrived together
                parts = sock.recv_multipart()
                try:
                    header = json.loads(parts[0].decode("utf-8"))
                except (UnicodeDecodeError, ValueError) as exc:
                    raise DataError(f"zmq message header is not JSON ({exc})") from None
                kind = header.get("type")
                if kind == "start":
                    if writer is not None:
                        raise DataError("zmq: a second 'start' message in one scan")
                    probe = _array(header, parts[1], "start").astype(np.complex64)
                    bad = None
                    if len(parts) > 2:
                        bad = _array({"dtype": "uint8", "shape": header.get("bad_pixels_shape", probe.shape)}, parts[2], "start") > 0
                    writer = LiveWriter(spool, probe, frame_dtype=header.get("frame_dtype", "float32"), bad_pixels=bad,
                                        diffraction_units=header.get("diffraction_units"), overwrite=overwrite)
                elif kind == "frame":
                    if writer is None:
                        raise DataError("zmq: a 'frame' message before the 'start' message")
                    frames.append(_array(header, parts[1], "frame"))
                    xs.append(float(header["x"]))
                    ys.append(float(header["y"]))
                elif kind == "end":
                    done = True
                else:
                    raise DataError(f"zmq: unknown message type {kind!r}, expected start, frame or end")
                if done or len(frames) >= 256 or not sock.poll(0):
                    break
            if frames:
                assert writer is not None
                writer.append(np.stack(frames))
                writer.append_positions(np.array(xs), np.array(ys))
            if done:
                if writer is None:
                    raise DataError("zmq: 'end' before any 'start' message")
                writer.complete()
                return writer.frames
    finally:
        if writer is not None:
            writer.close()
        sock.close()


def send_scan(url: str, arrays: Mapping[str, Any], rate: float = float("inf"), *, bind: bool = True, end: bool = True) -> int:
    """Send a scan (`diffraction`, `xcoords`, `ycoords`, `probeGuess`, optional `bad_pixels`) with
    the protocol above from a PUSH socket (a stand-in for a detector stream, for tests and demos)."""
    zmq = _zmq()
    _check_url(url)
    sock = zmq.Context.instance().socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 10_000)
    (sock.bind if bind else sock.connect)(url)
    try:
        d = arrays["diffraction"]
        probe = np.ascontiguousarray(arrays["probeGuess"], np.complex64)
        head = {"type": "start", "shape": list(probe.shape), "dtype": "complex64", "frame_dtype": str(np.dtype(d.dtype))}
        parts = [json.dumps(head).encode(), probe.tobytes()]
        if arrays.get("bad_pixels") is not None:
            parts.append(np.ascontiguousarray(arrays["bad_pixels"], np.uint8).tobytes())
        sock.send_multipart(parts)
        t0 = time.perf_counter()
        for i in range(int(d.shape[0])):
            if np.isfinite(rate):
                time.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
            frame = np.ascontiguousarray(d[i])
            h = {"type": "frame", "x": float(arrays["xcoords"][i]), "y": float(arrays["ycoords"][i]),
                 "shape": list(frame.shape), "dtype": str(frame.dtype)}
            sock.send_multipart([json.dumps(h).encode(), frame.tobytes()])
        if end:
            sock.send_multipart([json.dumps({"type": "end"}).encode()])
        return int(d.shape[0])
    finally:
        sock.close()


def start_bridge(url: str, spool: str | Path, *, timeout: float, overwrite: bool = False) -> Any:
    """The bridge as a child process (`subprocess.Popen`), after checking pyzmq and the URL here."""
    import subprocess

    _zmq()
    _check_url(url)
    if Path(spool).exists() and not overwrite:
        raise ConfigError(f"{spool}: exists; pass --overwrite to replace the spool file")
    cmd = [sys.executable, "-m", "ptychopinn.interop.onnx.zmq_bridge", url, str(spool), "--timeout", repr(float(timeout))]
    return subprocess.Popen(cmd + (["--overwrite"] if overwrite else []))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ptychopinn.interop.onnx.zmq_bridge",
                                description="Receive a ZeroMQ frame stream into a live SWMR HDF5 scan file.")
    p.add_argument("url", help="endpoint of the sender's PUSH socket, e.g. tcp://127.0.0.1:5555")
    p.add_argument("spool", metavar="SPOOL.h5", help="live scan file to write")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S", help="give up after S seconds without a message")
    p.add_argument("--bind", action="store_true", help="bind instead of connect")
    p.add_argument("--overwrite", action="store_true", help="replace an existing SPOOL.h5")
    args = p.parse_args(argv)
    try:
        n = bridge(args.url, args.spool, timeout=args.timeout, overwrite=args.overwrite, bind=args.bind)
    except PtychoPINNError as exc:
        print(f"ptychopinn: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"received {n} frames into {args.spool}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
