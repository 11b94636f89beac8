"""Make ``import triton`` fail as it does on macOS and Windows, where PyPI has no Triton.

Put this folder first on ``PYTHONPATH``: Python imports ``sitecustomize`` at start-up, and the finder
below then answers every ``triton`` import with ``ModuleNotFoundError``. Used by tests/test_no_triton.py
for notebook kernels and subprocesses.
"""
import sys


class _NoTriton:
    """A meta-path finder that refuses ``triton`` and its submodules, ahead of every other finder."""

    def find_spec(self, name, path=None, target=None):
        if name == "triton" or name.startswith("triton."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: no-Triton test tier)", name=name)
        return None


sys.meta_path.insert(0, _NoTriton())
