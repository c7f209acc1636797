"""Benchmark suite of ptychopinn (not installed with the wheel; run from a source checkout).

    python -m benchmarks [--quick] [--only NAME] [--json OUT] [--markdown docs/benchmarks.md]
    ptychopinn bench [--quick] [--only NAME] [--json OUT]

Groups: limits, kernels, inference, training, scale, quality (see docs/benchmarks.md).
TensorFlow comparisons run in a subprocess (`benchmarks.tf_worker`) and are reported as
"skipped: tensorflow not installed" without TensorFlow.
"""
