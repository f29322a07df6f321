"""Triton kernels for bertforge. One op per file (kernels -> launchers -> autograd.Function / custom op -> public
function); the pure-torch references of all of them live in `bertforge.kernels.reference`, the CPU path and the test oracle.
Importing this package or `bertforge.kernels.reference` never imports Triton; `kernels.<op>` modules do."""
