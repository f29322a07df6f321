"""Triton kernels for bertforge. One op per file: kernel -> launchers -> autograd.Function -> public op, with a
pure-torch `*_ref` beside each (the CPU path and the test oracle)."""
