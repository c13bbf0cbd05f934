"""Process-wide settings that make FastDiSS fast on a CPU, applied when the task is set up.

Measured on this project's 2-core development machine (docs/measurements.md, seventh session):

- glibc's allocator hands back every freed block above its (dynamic) mmap threshold to the
  OS, so the next tensor of that size is mapped again, page by page, on first touch. A training
  update allocates many blocks of a few MB (activations, a block of rounding logits) and paid
  for those page faults on every update. Keeping blocks of up to 32 MiB (glibc's maximum) in the
  heap, and not trimming it, removes them. Results are unchanged: only where memory comes from.
- Denormal floats (below 1.2e-38) take a slow path in the CPU's floating-point unit. The
  softmax of a confident model underflows into them: exp(-90) is one. Flushing them to zero
  made a block softmax 4-7x faster at such logits; the values it changes are below 1e-38.
- `--fp32-matmul-precision medium` lets oneDNN compute float32 matrix products with bfloat16
  inputs and float32 accumulation, on CPUs that have the instructions (AMX, AVX512-BF16); it is
  torch.set_float32_matmul_precision, the CPU's counterpart of TF32 on GPUs, and changes the
  numbers slightly. With it, PyTorch's fused CPU attention kernel became several times slower
  than the plain matmul + softmax one on float32 inputs, so that kernel is switched off on
  machines without CUDA, unless the attention runs in bfloat16 (`--decoding-dtype bfloat16`),
  where the fused kernel is the fast one (`use_fused_cpu_attention`).
- fairseq-train's `--amp` autocasts CUDA operations only, so on a CPU it changed nothing. There
  it now trains under CPU autocast to bfloat16 (`cpu_training_autocast`): matrix products take
  bfloat16 inputs made once per operation, where `medium` converts float32 inputs inside every
  product. CPU autocast keeps few operations in float32 (not softmax), so the loss terms upcast
  their logits to float32 themselves, as they did for --fp16. Parameters,
  gradients and the optimizer stay float32, so checkpoints are the same kind as without it.
  README job's model and batch on an AVX512-BF16 CPU: 1.23 s an update against 1.72 s with
  `medium` alone (docs/measurements.md, thirty-seventh session).
"""

import contextlib
import ctypes
import ctypes.util
import logging

import torch

logger = logging.getLogger(__name__)

MATMUL_PRECISIONS = ("highest", "high", "medium")

# mallopt(3) parameters of glibc
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc ignores larger values on 64-bit systems
_TRIM_THRESHOLD = 1024 * 1024 * 1024
_TOP_PAD = 64 * 1024 * 1024


def keep_freed_memory_in_heap() -> bool:
    """glibc only; returns False (and changes nothing) with another C library."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    ok &= mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    ok &= mallopt(_M_TOP_PAD, _TOP_PAD) == 1
    return bool(ok)


def apply_cpu_settings(matmul_precision: str = "highest", tune: bool = True) -> None:
    if matmul_precision not in MATMUL_PRECISIONS:
        raise ValueError(
            f"--fp32-matmul-precision must be one of {MATMUL_PRECISIONS}, got {matmul_precision!r}"
        )
    torch.set_float32_matmul_precision(matmul_precision)
    use_fused_cpu_attention(torch.float32)
    if tune:
        allocator = keep_freed_memory_in_heap()
        flushed = torch.set_flush_denormal(True)
        logger.info(
            "fastdiss CPU settings: fp32 matmul precision %s, allocator keeps freed memory: %s, "
            "denormals flushed: %s", matmul_precision, allocator, flushed,
        )


def use_fused_cpu_attention(attention_dtype: torch.dtype) -> None:
    """Chooses PyTorch's CPU kernel of scaled_dot_product_attention for attention run in
    `attention_dtype`, after the float32 matrix-product precision is set.

    The fused (flash) kernel is slow on float32 inputs under reduced precision (a 500 x 30-position
    self-attention, 2 threads: 55 ms against 12 ms at `highest`; its backward 49 ms), and the
    plain matmul + softmax kernel then wins. On bfloat16 inputs the fused kernel takes 12 ms and
    the plain one, which works on float32 copies of its inputs, is the slow one: a bfloat16
    decode spent 1.5-1.7x as long in the denoiser with it (docs/measurements.md, thirty-third
    session). One process-wide flag (torch's, named for CUDA) selects the CPU kernel, so the
    last caller decides. At `highest` precision, and on GPUs, the flag is left as it is.
    """
    if torch.cuda.is_available() or torch.get_float32_matmul_precision() == "highest":
        return
    torch.backends.cuda.enable_flash_sdp(attention_dtype != torch.float32)


def cpu_bfloat16_supported() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX); without them oneDNN
    emulates bfloat16 matrix products, slower than float32 ones. torch.cpu's private checks
    (torch 2.x); without them, assumed present."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if None in checks:
        return True
    return any(check() for check in checks)


_announced_autocast = False


@contextlib.contextmanager
def cpu_training_autocast(enabled: bool):
    """A training step's forward under CPU autocast to bfloat16 when `enabled` (fairseq's --amp
    on a CPU). Inside it the attention uses the plain matmul + softmax kernel: under autocast its
    training update took 1.07 s against 1.31 s with the fused kernel, whose backward is slow;
    the process-wide flag is put back afterwards, for --eval-bleu's decoding."""
    if not enabled:
        yield
        return
    global _announced_autocast
    if not _announced_autocast:
        _announced_autocast = True
        if cpu_bfloat16_supported():
            logger.info("--amp on the CPU: the forward runs under bfloat16 autocast "
                        "(parameters, gradients and optimizer stay float32)")
        else:
            logger.warning("--amp on the CPU: the forward runs under bfloat16 autocast, but this CPU "
                           "has no bfloat16 instructions (AVX512-BF16 or AMX) and may be slower "
                           "than float32; leave --amp out")
    fused = torch.backends.cuda.flash_sdp_enabled()
    torch.backends.cuda.enable_flash_sdp(False)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    finally:
        torch.backends.cuda.enable_flash_sdp(fused)
