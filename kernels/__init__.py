"""Fused operations of ogan-plugin (shipped as ``ogan_plugin.kernels``).

One fused operation per file; each file reads top to bottom: Triton kernel(s), launcher,
autograd glue, torch reference, and the ``ogan_backends`` hook that registers them.
"""

# Registers the torch.library operators (torch.ops.ogan_plugin.*); imports no Triton.
from ogan_plugin.kernels import ops  # noqa: E402,F401
