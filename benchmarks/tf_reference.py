"""The legacy TensorFlow PtychoPINN re-implemented with Keras 3 and raw TF ops (benchmark reference).

Covers the FULL forward pass of the K2-era autoencoder (spec §3, §4.3), gridsize ≥ 1, N 64/128/256:

- conv network (spec §3): a Keras 3 functional model, one `Conv2D` per legacy conv, named by the
  torch module path (`encoder_blocks_0_conv1`, …); weights come from
  `interop.keras_layout.export_keras_weights(model)` (order = `keras_conv_order`), so the TF and
  torch networks hold identical weights. pad_object / probe_big / amp head width as configured.
- physics (spec §4.2–§4.4, §4.7), plain TF ops: translation = `ImageProjectiveTransformV3`
  (BILINEAR, CONSTANT 0, the op TF's `Translation` equals, §4.2); per-sample in-model reassembly
  with the centre-mask normaliser (eps 1e-3, re-centred offsets, §4.4; real, imaginary and mask
  planes share one warp call, which is no slower than TF's separate calls); `trimmed_obj` crop;
  `extract_patches_position`; probe illumination (+ optional probe mask); `fft2d` diffraction
  `sqrt(fftshift(|F|²/N²))`; Â = s·A; Î = Â²; K2 Poisson NLL `mean(Î − y·log Î)`.
- not covered: gaussian_smoothing_sigma ≠ 0 (raises), the K2 batch-collapse bug (§8.1; we
  implement the intended per-sample formula), XLA compilation.

Also `reassemble_position_tf` (spec §4.6, TF's global stitcher built from the same warp op).
Layouts are TF's: x `(B, N, N, C)`, positions `(B, 1, 2, C)`.
"""
from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ptychopinn.config import ModelConfig
from ptychopinn.model import architecture as arch

REASSEMBLY_EPS = 1e-3


# --------------------------------------------------------------------------- TF ops
def tf_translate(images: tf.Tensor, shifts: tf.Tensor) -> tf.Tensor:
    """`images (n, H, W, ch)` float32 moved by `shifts (n, 2)` `[dx, dy]` (ImageProjectiveTransformV3,
    bilinear, zero fill): out(r, c) = in(y = r − dy, x = c − dx)."""
    dx, dy = shifts[:, 0], shifts[:, 1]
    one, zero = tf.ones_like(dx), tf.zeros_like(dx)
    transforms = tf.stack([one, zero, -dx, zero, one, -dy, zero, zero], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
        fill_value=0.0,
    )


def tf_translate_complex(images: tf.Tensor, shifts: tf.Tensor) -> tf.Tensor:
    """`images (n, H, W)` complex64 translated by `shifts (n, 2)` (real/imag as two channels)."""
    ri = tf.stack([tf.math.real(images), tf.math.imag(images)], axis=-1)
    out = tf_translate(ri, shifts)
    return tf.complex(out[..., 0], out[..., 1])


def tf_extract_patches(canvas: tf.Tensor, positions: tf.Tensor, size: int) -> tf.Tensor:
    """TF `extract_patches_position`: `canvas (B, P, P)` complex, `positions (B, C, 2)` → `(B·C, size, size)`:
    the canvas repeated C times, translated by +position, centre-cropped."""
    C = positions.shape[1]
    P = canvas.shape[-1]
    rep = tf.repeat(canvas, C, axis=0)
    moved = tf_translate_complex(rep, tf.reshape(positions, (-1, 2)))
    k = (P - size) // 2
    return moved[:, k : k + size, k : k + size]


def reassemble_position_tf(patches: tf.Tensor, offsets: np.ndarray, M: int = 20, chunk: int = 32) -> tf.Tensor:
    """TF's `reassemble_position` (spec §4.6): `patches (n, N, N)` complex64, `offsets (n, 2)` → `(S, S)`.

    Every central M×M crop is zero-padded to the full canvas and warped there (chunks of 32, as
    TF's `shift_and_sum`); cost O(n·S²). Padding happens per chunk (TF pads all n at once, which
    only costs more memory).
    """
    n, N = int(patches.shape[0]), int(patches.shape[1])
    off = np.asarray(offsets, np.float32).reshape(n, 2)
    g = off - off.mean(axis=0, dtype=np.float32)
    pad = int(math.ceil(float(np.abs(g).max())))
    pad += pad % 2
    h = M // 2
    S = M + 2 * pad
    crop = patches[:, N // 2 - h : N // 2 + h, N // 2 - h : N // 2 + h]
    ri = tf.stack([tf.math.real(crop), tf.math.imag(crop), tf.ones_like(tf.math.real(crop))], axis=-1)
    gt = tf.constant(g)
    total = tf.zeros((S, S, 3), tf.float32)
    for s in range(0, n, chunk):
        part = tf.pad(ri[s : s + chunk], [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        total += tf.reduce_sum(tf_translate(part, gt[s : s + chunk]), axis=0)
    return tf.complex(total[..., 0], total[..., 1]) / tf.complex(total[..., 2] + 1e-9, 0.0)


# --------------------------------------------------------------------------- network
def _activation(name: str):
    return {"sigmoid": "sigmoid", "swish": "silu", "softplus": "softplus", "relu": "relu"}[name]


def _pi_tanh(t):
    """Phase activation π·tanh (radians)."""
    return math.pi * keras.ops.tanh(t)


def _border(N: int) -> np.ndarray:
    m = np.ones((N, N), np.float32)
    m[N // 4 : 3 * N // 4, N // 4 : 3 * N // 4] = 0
    return m


def build_network(config: ModelConfig) -> tuple[keras.Model, dict[str, keras.layers.Conv2D]]:
    """Keras functional conv network: x `(B, N, N, C)` (already divided by s) → [amp, phase]
    `(B, N, N, Cout)` after their activations. Returns (model, {torch module path: Conv2D})."""
    N, C = config.N, config.channels
    convs: dict[str, keras.layers.Conv2D] = {}
    specs = {s.path: s for s in arch.keras_conv_order(config)}

    def conv(path: str, act: str | None = None) -> keras.layers.Conv2D:
        layer = keras.layers.Conv2D(specs[path].out_channels, 3, padding="same", activation=act, name=path.replace(".", "_"))
        convs[path] = layer
        return layer

    def up_block(prefix: str, h):
        h = conv(f"{prefix}.conv1", "relu")(h)
        h = conv(f"{prefix}.conv2", "relu")(h)
        return keras.layers.UpSampling2D(2, interpolation="nearest")(h)

    x_in = keras.Input((N, N, C), name="input")
    h = x_in
    for i in range(len(arch.encoder_filters(config))):
        h = conv(f"encoder.blocks.{i}.conv1", "relu")(h)
        h = conv(f"encoder.blocks.{i}.conv2", "relu")(h)
        h = keras.layers.MaxPooling2D(2)(h)
    outs = []
    split = arch.decoder_features(config) - arch.X2_SPLIT
    for which in ("amp", "phase"):
        p = f"decoder_{which}"
        act = _activation(config.amp_activation) if which == "amp" else _pi_tanh
        d = h
        for j in range(len(arch.decoder_filters(config))):
            d = up_block(f"{p}.blocks.{j}", d)
        if not config.pad_object:
            y = keras.layers.Activation(act)(conv(f"{p}.head2")(up_block(f"{p}.x2_block", d)))
        else:
            y = keras.layers.Activation(act)(conv(f"{p}.head1")(d[..., :split]))
            y = keras.layers.ZeroPadding2D(N // 4)(y)
            if config.probe_big:
                x2 = keras.layers.Activation("silu")(conv(f"{p}.head2")(up_block(f"{p}.x2_block", d[..., split:])))
                y = y + x2 * _border(N)[None, :, :, None]
        outs.append(y)
    model = keras.Model(x_in, outs, name="ptychopinn_tf_reference")
    return model, convs


class TFPtychoPINN:
    """Network + physics of the legacy model in TF, with weights copied from a torch `PtychoPINN`.

    `arrays`: `export_keras_weights(model)`; probe `(N, N)` complex64; s = intensity scale.
    """

    def __init__(self, config: ModelConfig, arrays: list[np.ndarray], probe: np.ndarray, intensity_scale: float) -> None:
        if config.gaussian_smoothing_sigma != 0:
            raise ValueError("tf_reference: gaussian_smoothing_sigma != 0 is not implemented")
        self.config = config
        self.net, convs = build_network(config)
        self.convs = convs
        order = arch.keras_conv_order(config)
        if len(arrays) != 2 * len(order):
            raise ValueError(f"tf_reference: expected {2 * len(order)} weight arrays, got {len(arrays)}")
        for k, spec in enumerate(order):
            convs[spec.path].set_weights([np.asarray(arrays[2 * k], np.float32), np.asarray(arrays[2 * k + 1], np.float32)])
        self.s = float(intensity_scale)
        self.probe = tf.constant(np.asarray(probe, np.complex64).reshape(config.N, config.N))
        N = config.N
        cm = np.zeros((N, N), np.float32)
        cm[N // 4 : 3 * N // 4, N // 4 : 3 * N // 4] = 1
        self.centre = tf.constant(cm)
        if config.probe_mask:
            i = np.arange(N) - N / 2 + 0.5
            self.support = tf.constant((np.sqrt(i[:, None] ** 2 + i[None, :] ** 2) < N // 4).astype(np.float32))
        else:
            self.support = None

    def keras_weights(self) -> list[np.ndarray]:
        """Current conv weights `[kernel (3,3,in,out), bias, …]` in legacy Keras order."""
        out: list[np.ndarray] = []
        for spec in arch.keras_conv_order(self.config):
            out += [np.asarray(w) for w in self.convs[spec.path].get_weights()]
        return out

    # -- pieces ----------------------------------------------------------------------------
    def object_patches(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """x `(B, N, N, C)` sqrt-photons → object patches `(B, N, N, Cout)` complex64."""
        amp, phase = self.net(x / self.s, training=training)
        if self.config.combine == "polar":
            amp, phase = amp + 0 * phase, phase + 0 * amp  # broadcast a 1-channel amplitude
            return tf.complex(amp * tf.cos(phase), amp * tf.sin(phase))
        return tf.complex(amp + 0 * phase, phase + 0 * amp)

    def canvas(self, obj: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
        """In-model reassembly (spec §4.4): obj `(B, N, N, C)`, positions `(B, 1, 2, C)` → `(B, P, P)`."""
        cfg = self.config
        N, C, P = cfg.N, cfg.channels, cfg.padded_size
        lo = (P - N) // 2
        if not cfg.object_big:
            return tf.pad(obj[..., 0], [[0, 0], [lo, P - N - lo], [lo, P - N - lo]])
        o = tf.reshape(tf.transpose(positions[:, 0], [0, 2, 1]), (-1, 2))  # (B·C, 2)
        if cfg.recentre_offsets:
            o = o - tf.reduce_mean(o, axis=0, keepdims=True)
        flat = tf.reshape(tf.transpose(obj, [0, 3, 1, 2]), (-1, N, N))  # patch (b, c) at row b·C + c
        mask = tf.broadcast_to(self.centre, tf.shape(flat, out_type=tf.int32))
        planes = tf.stack([tf.math.real(flat), tf.math.imag(flat), mask], axis=-1)
        planes = tf.pad(planes, [[0, 0], [lo, P - N - lo], [lo, P - N - lo], [0, 0]])
        moved = tf.reduce_sum(tf.reshape(tf_translate(planes, -o), (-1, C, P, P, 3)), axis=1)
        return tf.complex(moved[..., 0], moved[..., 1]) / tf.complex(moved[..., 2] + REASSEMBLY_EPS, 0.0)

    def predict_object(self, x: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
        """TF `diffraction_to_obj`: `(B, N, N)` complex64 (trimmed_obj)."""
        N, P = self.config.N, self.config.padded_size
        k = (P - N) // 2
        return self.canvas(self.object_patches(x), positions)[:, k : k + N, k : k + N]

    def forward(self, x: tf.Tensor, positions: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Autoencoder outputs (trimmed_obj `(B, N, N)`, Â `(B, N, N, C)`, Î = Â²)."""
        cfg = self.config
        N, C, P = cfg.N, cfg.channels, cfg.padded_size
        canvas = self.canvas(self.object_patches(x, training=training), positions)
        k = (P - N) // 2
        pos = tf.transpose(positions[:, 0], [0, 2, 1])  # (B, C, 2), raw offsets
        psi = tf_extract_patches(canvas, pos, N) * self.probe  # (B·C, N, N)
        if self.support is not None:
            psi = psi * tf.complex(self.support, 0.0)
        F = tf.signal.fft2d(psi)
        inten = (tf.math.real(F) ** 2 + tf.math.imag(F) ** 2) / float(N * N)
        inten = tf.roll(inten, shift=[N // 2, N // 2], axis=[1, 2])  # fftshift (N even)
        amp = tf.sqrt(inten)
        amp = tf.transpose(tf.reshape(amp, (-1, C, N, N)), [0, 2, 3, 1]) * self.s
        return canvas[:, k : k + N, k : k + N], amp, tf.square(amp)

    # -- compiled entry points ------------------------------------------------------------------
    def predict_fn(self):
        return tf.function(lambda x, p: self.predict_object(x, p), reduce_retracing=True)

    def train_step_fn(self, learning_rate: float = 1e-3):
        """A tf.function doing one Adam step on the K2 NLL; returns the loss."""
        opt = keras.optimizers.Adam(learning_rate=learning_rate, epsilon=1e-7)
        variables = self.net.trainable_variables
        opt.build(variables)

        @tf.function(reduce_retracing=True)
        def step(x, p):
            with tf.GradientTape() as tape:
                _, _, inten = self.forward(x, p, training=True)
                y = tf.square(x)
                loss = tf.reduce_mean(inten - y * tf.math.log(inten))
            grads = tape.gradient(loss, variables)
            opt.apply_gradients(zip(grads, variables))
            return loss

        return step


def tf_threads(n: int) -> None:
    """Pin TF's intra- and inter-op pools (call before any op runs)."""
    if n > 0:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)


def tf_versions() -> dict[str, Any]:
    return {"tensorflow": tf.__version__, "keras": keras.__version__, "keras_backend": keras.backend.backend()}


__all__ = [
    "tf_translate",
    "tf_translate_complex",
    "tf_extract_patches",
    "reassemble_position_tf",
    "build_network",
    "TFPtychoPINN",
    "tf_threads",
    "tf_versions",
]
