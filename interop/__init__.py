"""The TensorFlow boundary (installed as `ptychopinn.interop`): legacy bundles, TF-exact
wrappers, legacy `params.cfg` keys, ONNX. Imports nothing heavy at package import time."""
