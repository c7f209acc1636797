"""Low-level differentiable ops (installed as `ptychopinn.kernels`). Pure torch, no loops over
patches, static shapes, `torch.compile`-friendly, CPU and CUDA. See docs/architecture.md."""
from .extract import extract_patches
from .mixed_conv import conv2d_master_weight
from .reassemble import center_mask, reassemble_patches
from .stitch import default_chunk_size, gather_patches, normalize, stitch
from .translate import sample_grid, translate

__all__ = [
    "translate",
    "sample_grid",
    "extract_patches",
    "center_mask",
    "reassemble_patches",
    "stitch",
    "gather_patches",
    "normalize",
    "default_chunk_size",
    "conv2d_master_weight",
]
