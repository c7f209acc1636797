"""Package discovery for the split source layout.

`kernels/` and `interop/` sit at the repository root but are installed as `ptychopinn.kernels`
and `ptychopinn.interop`; the only top-level import name is `ptychopinn`. Everything else
lives in pyproject.toml.
"""
from setuptools import find_packages, setup

ROOTS = {"ptychopinn": "ptychopinn", "ptychopinn.kernels": "kernels", "ptychopinn.interop": "interop"}


def _packages() -> list[str]:
    names: list[str] = []
    for dotted, folder in ROOTS.items():
        names.append(dotted)
        names += [f"{dotted}.{sub}" for sub in find_packages(where=folder)]
    # `ptychopinn` itself must not re-discover kernels/interop under another name
    return sorted(set(names))


setup(packages=_packages(), package_dir=ROOTS)
