"""Where measuring runs and in which precision the evaluation's forward passes run.

Weights, random directions, Hessians and evaluation all live on the model's device: the
measuring code follows the tensors it is given, so choosing the device means placing the model.
Quantization and GPTQ always compute in float32. Evaluation may run its forward passes in a
16-bit dtype on a GPU (several times faster there), but only where it agrees with float32:
`pipelines.measure.nll.evaluate_nll` checks each such evaluation and falls back when it does not.
"""

from __future__ import annotations

from store.errors import InputError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
EVAL_DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_device(choice: str) -> str:
    """'auto' → 'cuda' when a CUDA device is present, else 'cpu'; 'cuda[:N]' only when it exists."""
    import torch

    choice = (choice or "auto").strip().lower()
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cpu":
        return "cpu"
    kind, _, index = choice.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise InputError(f"--device takes {DEVICE_CHOICES}, not {choice!r}")
    if not torch.cuda.is_available():
        raise InputError(f"--device {choice}: no CUDA device here; use --device cpu (or auto)")
    if index and int(index) >= torch.cuda.device_count():
        raise InputError(f"--device {choice}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return choice


def resolve_eval_dtype(choice: str, device: str) -> str:
    """'auto' → bfloat16 on a GPU (checked against float32 per evaluation), float32 on the CPU.

    On the CPU 16-bit matmuls are slower than float32, so auto never picks them there.
    """
    choice = (choice or "auto").strip().lower()
    if choice not in EVAL_DTYPES:
        raise InputError(f"--eval-dtype takes {', '.join(EVAL_DTYPES)}, not {choice!r}")
    if choice == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    return choice
