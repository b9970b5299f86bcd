"""How onnxruntime's CPU provider holds each weight of an export: kernel, file bytes, resident bytes.

One place for the packing facts that the export writes, its checks compare against, and the
advisor's runtime memory model charges (pure arithmetic: no onnx, numpy or torch here).

A quantized Linear [out, in] is exported as one of two kernels:
- `MatMulNBits` (com.microsoft) when the integer codes fit 2, 4 or 8 unsigned bits with the
  kernel's default zero point 2^(bits−1), and the scales fit its blocks (a power of two ≥ 16 along
  the input axis): MX blocks and int groups of such sizes, and classic-int channel and tensor
  scales (repeated per block in memory, stored once per row / tensor in the file). Codes are stored
  packed ([out, blocks, block·bits/8] bytes, the last block padded), scales at their own width (an
  MX E8M0 exponent as one byte, a classic-int scale as fp16) and widened to the float32 the kernel
  reads by a constant subgraph that onnxruntime folds at session start. `accuracy_level=0` is an
  attribute of the node, so every session computes in float32 (no int8 activations). MLAS prepacks
  4-bit B for its float32 kernel (block 16…256), so a 4-bit weight stays 4-bit in memory; 2- and
  8-bit B stay as stored and each call dequantizes the whole weight to float32 first (`call_bytes`).
- `DequantizeLinear` (codes in the smallest signed ONNX integer container) otherwise: MX blocks
  under 16 or not a power of two, codes wider than 8 bits (mxfp6 E3M2 in INT16, FP8 in INT32).
  onnxruntime does not fold it (nor fuse it: no 4-bit block of 16+); each call dequantizes the
  weight to float32 (`call_bytes`).
Token embeddings and an output layer are stored at 16 bits, once (tied weights share one tensor,
no transposed copy). Held: the float16 table for the Gather (it widens only the rows it reads) and
the output layer as float32, packed once for onnxruntime's GEMM (it has no fp16 × fp32 kernel on
CPU) — tied or not, 2 + 4 bytes per vocab × hidden element.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

NBITS = (2, 4, 8)  # MatMulNBits' element widths
PACKED_BLOCKS = (16, 32, 64, 128, 256)  # MLAS's float32 kernel for 4-bit B (SQNBitGemm, CompFp32)
FLOAT32 = 4  # bytes: what onnxruntime's CPU kernels compute in


@dataclass(frozen=True)
class LinearLayout:
    """How the quantized Linears of one format are exported and held by onnxruntime (CPU)."""

    op: str  # "MatMulNBits" or "DequantizeLinear"
    bits: int  # bits per stored element (packed codes or signed integer container)
    block: int | None  # elements per scale along the input axis (None: channel or tensor scale)
    scale_file_bits: int  # 8: MX E8M0 byte; 16: classic-int fp16 scale

    def block_for(self, in_features: int) -> int | None:
        """MatMulNBits' block for a weight with `in_features` inputs: the format's block, or the
        smallest power of two ≥ 16 holding a shorter row (one scale either way, less padding); for
        channel and tensor scales the block of MLAS's packed sizes that holds the row in fewest bytes."""
        if self.op != "MatMulNBits":
            return self.block
        if self.block is None:
            return min(PACKED_BLOCKS, key=lambda b: (-(-in_features // b) * (b * self.bits // 8 + FLOAT32), -b))
        return min(self.block, max(16, 1 << (in_features - 1).bit_length()))

    def packed(self, in_features: int) -> bool:
        """MLAS prepacks B at session start (no float32 copy per call): 4-bit, block 16…256."""
        return self.op == "MatMulNBits" and self.bits == 4 and self.block_for(in_features) in PACKED_BLOCKS

    def file_bytes(self, out_features: int, in_features: int, fmt) -> int:
        """Bytes of codes and scales in model.onnx."""
        if self.op == "MatMulNBits":
            block = self.block_for(in_features)
            blocks = -(-in_features // block)
            scales = out_features * blocks if self.block else _scale_count(fmt, out_features, in_features)
            return out_features * blocks * block * self.bits // 8 + scales * self.scale_file_bits // 8
        return int(fmt.storage_bytes(out_features, in_features, container=True))

    def resident_bytes(self, out_features: int, in_features: int, fmt) -> int:
        """Bytes held after session start: codes as stored (or MLAS-packed, same size), scales as float32."""
        if self.op == "MatMulNBits":
            block = self.block_for(in_features)
            blocks = -(-in_features // block)
            return out_features * blocks * (block * self.bits // 8 + FLOAT32)
        codes = -(-out_features * in_features * self.bits // 8)
        scales = _scale_count(fmt, out_features, in_features)
        return codes + scales * (self.scale_file_bits // 8 + FLOAT32)  # stored, and their folded float32

    def call_bytes(self, out_features: int, in_features: int) -> int:
        """Bytes one call allocates for the weight itself (its float32 dequantized copy); 0 when prepacked."""
        return 0 if self.packed(in_features) else out_features * in_features * FLOAT32


def _scale_count(fmt, out_features: int, in_features: int) -> int:
    if fmt.granularity in ("block", "group"):
        return out_features * -(-in_features // fmt.block_size)
    return out_features if fmt.granularity == "channel" else 1


def nbits_for(fmt) -> int | None:
    """MatMulNBits' element width for the format's codes (|code| ≤ 2^(bits−1) − 1), None if none fits."""
    k = fmt.block_size
    if fmt.granularity in ("block", "group") and (k < 16 or k & (k - 1)):
        return None
    for bits in NBITS:
        if fmt.max_code <= 2 ** (bits - 1) - 1:
            return bits
    return None


@functools.lru_cache(maxsize=256)  # Formats are frozen: recommend asks once per catalog model and format
def linear_layout(fmt) -> LinearLayout:
    """The kernel and storage of every quantized Linear in `fmt`."""
    scale_bits = 8 if fmt.is_mx else 16
    bits = nbits_for(fmt)
    if bits is not None:
        return LinearLayout("MatMulNBits", bits, fmt.block_size, scale_bits)
    return LinearLayout("DequantizeLinear", fmt.container_bits, fmt.block_size, scale_bits)


EMBEDDING_BITS = 16  # token embeddings / output layer in the file (fp16); float32 once loaded


def embedding_file_bytes(vocab: int, hidden: int, tied: bool) -> int:
    """Token embedding (+ untied output layer) in model.onnx: fp16, stored once."""
    return vocab * hidden * EMBEDDING_BITS // 8 * (1 if tied else 2)


def embedding_resident_bytes(vocab: int, hidden: int, tied: bool) -> int:
    """After session start: the fp16 table (Gather) + the output layer as packed float32 (GEMM)."""
    return vocab * hidden * (EMBEDDING_BITS // 8 + FLOAT32)
