"""Truth / network / refined picture from `refine_reduced.py`'s NPZ (keys truth, network,
refined, refine_epochs, dose), or from any NPZ holding `truth`, `dose` and panels `panel_0…`
with their titles in `panel_names`:

    python benchmarks/refine_figure.py RUN.npz docs/images/refinement.png
"""
from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _aligned(obj: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """obj times the complex scalar that best matches the truth (global scale and phase)."""
    a, b = obj.ravel().astype(np.complex128), truth.ravel().astype(np.complex128)
    return (obj * (np.vdot(a, b) / np.vdot(a, a))).astype(np.complex64)


def main(src: str, dst: str) -> None:
    z = np.load(src)
    truth = z["truth"]
    if "panel_names" in z.files:
        panels = [("truth", truth)] + [(str(n), _aligned(z[f"panel_{i}"], truth)) for i, n in enumerate(z["panel_names"])]
    else:
        panels = [("truth", truth), ("network", _aligned(z["network"], truth)),
                  (f"network + refine {int(z['refine_epochs'])}", _aligned(z["refined"], truth))]
    fig, axes = plt.subplots(2, len(panels), figsize=(2.5 * len(panels), 5.0), dpi=80)
    alo, ahi = np.abs(truth).min(), np.abs(truth).max()
    plo, phi = np.angle(truth).min(), np.angle(truth).max()
    for j, (name, obj) in enumerate(panels):
        axes[0, j].imshow(np.abs(obj), cmap="gray", vmin=alo, vmax=ahi)
        axes[1, j].imshow(np.angle(obj), cmap="twilight", vmin=plo, vmax=phi)
        axes[0, j].set_title(name, fontsize=8)
    axes[0, 0].set_ylabel("amplitude")
    axes[1, 0].set_ylabel("phase")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"phase object, {float(z['dose']):.0e} photons/pattern (covered region)", fontsize=9)
    fig.tight_layout()
    fig.savefig(dst)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
