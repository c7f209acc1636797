"""ptychodus interop (installed as `ptychopinn.interop.ptychodus`; needs the `ptychodus` extra).

    product.py        Reconstruction → ptychodus Product (save_product); ReconstructInput → Scan
    reconstructor.py  PtychoPINNReconstructor, a ptychodus TrainableReconstructor
    launcher.py       `ptychopinn-ptychodus`: ptychodus with ptychopinn registered

Names resolve on first access, so importing this package does not import ptychodus.
"""
from __future__ import annotations

from ptychopinn._lazy import lazy_exports

_LAZY: dict[str, str] = {
    "PtychoPINNReconstructor": ".reconstructor",
    "ReconstructorSettings": ".reconstructor",
    "ProductGeometry": ".product",
    "product_from_reconstruction": ".product",
    "write_product": ".product",
    "resolve_geometry": ".product",
    "scan_from_reconstruct_input": ".product",
    "scan_from_product_files": ".product",
    "PtychoPINNTorchLibrary": ".launcher",
    "register": ".launcher",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
