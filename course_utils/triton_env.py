"""One import for a notebook's Triton cells:
``from course_utils.triton_env import DEVICE, NO_TRITON, TRITON, tl, triton``.

- ``triton``, ``tl``: Triton and ``triton.language``, or stand-ins where Triton cannot run (macOS, Windows, a
  broken install), so a cell that defines a kernel still runs and ``check`` says why it cannot be tested.
- ``TRITON``: can Triton kernels run here (compiled on a GPU, or in the interpreter on the CPU)?
- ``DEVICE``: where the kernels' tensors live, ``cuda`` with a GPU, else ``cpu``.
- ``NO_TRITON``: the sentence a Triton cell prints instead of running, with the reason.
"""
import course_utils  # noqa: F401  (switches on the interpreter before triton is imported)
from course_utils.runtime import device, import_triton, triton_status

triton, tl = import_triton()
TRITON = triton_status().available
DEVICE = device()
NO_TRITON = f"Triton is not available here: {triton_status().reason}"

__all__ = ["DEVICE", "NO_TRITON", "TRITON", "tl", "triton"]
