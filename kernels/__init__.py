"""Low-level differentiable ops (installed as `ptychopinn.kernels`). Pure torch, no loops over
patches, static shapes, `torch.compile`-friendly, CPU and CUDA. See docs/architecture.md."""
