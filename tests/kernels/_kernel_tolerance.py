"""Tolerance rule for kernel tests (flash-attention's): the kernel's error against a high-precision reference may be
at most ~2x the error of plain torch computing the same thing in the same low precision, plus a one-ulp floor."""
import torch


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def assert_within_noise(out: torch.Tensor, torch_lowp: torch.Tensor, exact: torch.Tensor, factor: float = 2.0,
                        name: str = "") -> None:
    """out: kernel result; torch_lowp: plain torch in out's dtype; exact: fp64 (or fp32) reference."""
    assert out.shape == exact.shape, (name, out.shape, exact.shape)
    err_kernel, err_torch = max_err(out, exact), max_err(torch_lowp, exact)
    floor = torch.finfo(out.dtype).eps * max(1.0, exact.abs().max().item() if exact.numel() else 0.0)
    assert err_kernel <= factor * err_torch + floor, f"{name}: kernel err {err_kernel:.3g} > {factor} x torch err " \
                                                     f"{err_torch:.3g} + {floor:.3g}"
