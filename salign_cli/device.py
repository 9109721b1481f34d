"""Which torch device a command runs on: one rule for training and inference."""

from __future__ import annotations

import torch

from salign_cli.errors import OptionError


def mps_available() -> bool:
    """True on Apple silicon with a torch build that has the MPS backend."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def uses_channels_last(device: torch.device) -> bool:
    """Whether 4D tensors and the network go channels_last (NHWC) on ``device``.

    CUDA and CPU: oneDNN's NHWC convolutions run a width-16 U-Net training step at 32×48×64
    in 0.23 s instead of 0.27 s on two Xeon cores (docs/benchmarks.md); CUDA has trained NHWC
    under bf16 since the first GPU runs. MPS keeps torch's default layout (not measured there).
    """
    return device.type in ("cuda", "cpu")


def resolve_device(spec: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` → CUDA (``cuda:LOCAL_RANK`` under torchrun), else MPS, else CPU.

    Explicit ``cpu``, ``cuda``, ``cuda:N`` and ``mps`` are checked against this machine;
    a missing accelerator is an :class:`InputError` that names the fallback.
    """
    spec = spec.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not mps_available():
            raise OptionError("device", "mps: Apple MPS is not available here; use --device cpu")
        return torch.device("mps")
    if spec == "cuda" or spec.startswith("cuda:"):
        index_text = spec.partition(":")[2] or str(local_rank)
        if not index_text.isdigit():
            raise OptionError("device", f"{spec}: expected cuda or cuda:N with N a GPU number")
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise OptionError(
                "device",
                f"{spec}: no such CUDA GPU: no CUDA GPU is available here; use --device cpu",
            )
        if int(index_text) >= count:
            raise OptionError(
                "device", f"{spec}: no such CUDA GPU (found {count}); use --device cpu or auto"
            )
        return torch.device("cuda", int(index_text))
    raise OptionError("device", f"{spec}: expected auto, cpu, cuda, cuda:N or mps")
