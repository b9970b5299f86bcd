"""Rewrite an exported ONNX graph so each quantized weight is stored as low-bit codes + scales.

optimum exports a Linear as MatMul(x, Wᵀ) with Wᵀ an fp32 initializer [in, out]. Each such
initializer whose values equal a quantized weight we encoded (matched by content, so names do not
matter) becomes `DequantizeLinear(codes, scale)` feeding the same MatMul:
- codes: Wᵀ's integer codes in the smallest signed container that holds them (INT4 for mxint≤4
  and int≤4; INT8, INT16 or INT32 otherwise — stated, never hidden);
- scales, stored at their format's own width and widened in-graph (constant-folded by
  onnxruntime at session start): an MX block's E8M0 exponent as one uint8 byte, turned into the
  step 2^(S+offset) by Cast → Add → Pow; a classic-int fp16 scale as float16, Cast to float32.
DequantizeLinear is blocked along the input axis (opset 21, `axis=0`, `block_size=K`) for MX blocks
and int groups, per-axis (`axis=1`) for channel scales, per-tensor for a tensor scale.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pipelines.quantize.encoding import EncodedWeight

OPSET = 21
_CONTAINERS = {4: TensorProto.INT4, 8: TensorProto.INT8, 16: TensorProto.INT16, 32: TensorProto.INT32}


def _digest(array: np.ndarray) -> str:
    # + 0.0 turns −0.0 into +0.0: a code of 0 dequantizes to +0 whatever the sign RTN left
    return hashlib.sha256(np.ascontiguousarray(array + np.float32(0.0), dtype=np.float32).tobytes()).hexdigest()


def _codes_tensor(name: str, codes: np.ndarray, bits: int) -> TensorProto:
    if bits == 4:  # two's-complement nibbles, element 2i in the low half of byte i (ONNX INT4)
        flat = codes.astype(np.int8).ravel()
        if flat.size % 2:
            flat = np.append(flat, np.int8(0))
        nibbles = (flat.astype(np.uint8) & 0x0F)
        packed = (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8)
        return helper.make_tensor(name, TensorProto.INT4, codes.shape, packed.tobytes(), raw=True)
    return numpy_helper.from_array(codes.astype({8: np.int8, 16: np.int16, 32: np.int32}[bits]), name)


def _scale_nodes(prefix: str, encoded: EncodedWeight, offset: int | None):
    """(initializers, nodes, scale output name) computing the float32 scale of Wᵀ's layout."""
    if encoded.exponents is not None:  # MX: uint8 E8M0 bits, step = 2^(bits − 127 + offset)
        biased = (encoded.exponents.numpy().T + 127).astype(np.uint8)  # [blocks, out]
        inits = [numpy_helper.from_array(biased, f"{prefix}_e8m0"),
                 numpy_helper.from_array(np.array(offset - 127, dtype=np.float32), f"{prefix}_offset"),
                 numpy_helper.from_array(np.array(2.0, dtype=np.float32), f"{prefix}_two")]
        nodes = [helper.make_node("Cast", [f"{prefix}_e8m0"], [f"{prefix}_e_f"], to=TensorProto.FLOAT),
                 helper.make_node("Add", [f"{prefix}_e_f", f"{prefix}_offset"], [f"{prefix}_exp"]),
                 helper.make_node("Pow", [f"{prefix}_two", f"{prefix}_exp"], [f"{prefix}_scale"])]
        return inits, nodes, f"{prefix}_scale"
    steps = encoded.steps.numpy()
    if steps.size == 1:
        half = steps.reshape(()).astype(np.float16)
    elif encoded.group_size == encoded.codes.shape[1]:  # one scale per output channel
        half = steps[:, 0].astype(np.float16)
    else:
        half = steps.T.astype(np.float16)  # [groups, out]
    inits = [numpy_helper.from_array(half, f"{prefix}_fp16")]
    nodes = [helper.make_node("Cast", [f"{prefix}_fp16"], [f"{prefix}_scale"], to=TensorProto.FLOAT)]
    return inits, nodes, f"{prefix}_scale"


def _dequantize_node(prefix: str, encoded: EncodedWeight, scale: str, output: str):
    attrs = {}
    steps = encoded.steps
    if steps.numel() > 1:
        if encoded.exponents is None and encoded.group_size == encoded.codes.shape[1]:
            attrs = {"axis": 1}
        else:
            attrs = {"axis": 0, "block_size": encoded.group_size}
    return helper.make_node("DequantizeLinear", [f"{prefix}_codes", scale], [output], **attrs)


def quantize_initializers(model: onnx.ModelProto, encoded: dict[str, EncodedWeight],
                          offsets: dict[str, int | None]) -> dict[str, str]:
    """Replace every initializer equal to an encoded weight's Wᵀ; {target name: initializer name}.

    `offsets`: for MX targets the exponent offset of the element's smallest step (emin − M for
    float elements, −(P − 2) for int elements); None for classic int.
    """
    graph = model.graph
    wanted = {_digest(e.dequantize().numpy().T): name for name, e in encoded.items()}
    replaced, keep = {}, []
    new_inits, new_nodes = [], []
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT and len(init.dims) == 2:
            target = wanted.get(_digest(numpy_helper.to_array(init)))
            if target is not None and target not in replaced:
                e = encoded[target]
                prefix = f"ptq/{target}"
                new_inits.append(_codes_tensor(f"{prefix}_codes", e.codes.numpy().T, e.container_bits))
                inits, nodes, scale = _scale_nodes(prefix, e, offsets[target])
                new_inits += inits
                new_nodes += nodes + [_dequantize_node(prefix, e, scale, init.name)]
                replaced[target] = init.name
                continue
        keep.append(init)
    missing = sorted(set(encoded) - set(replaced))
    if missing:
        raise ValueError(f"the exported graph holds no initializer equal to {missing[0]} "
                         f"(and {len(missing) - 1} more): the exporter changed the weights")
    del graph.initializer[:]
    graph.initializer.extend(keep + new_inits)
    # the dequantized weights keep their old names, so consumers need no rewiring; nodes go first
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(new_nodes + nodes)
    _set_opset(model, OPSET)
    return replaced


def _set_opset(model: onnx.ModelProto, version: int) -> None:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < version:
            opset.version = version


def quantized_bytes(model: onnx.ModelProto, replaced: dict[str, str]) -> int:
    """Bytes of the initializers that store the quantized weights (codes and scales)."""
    prefixes = tuple(f"ptq/{t}_" for t in replaced)
    bits = {TensorProto.INT4: 4, TensorProto.INT8: 8, TensorProto.UINT8: 8, TensorProto.INT16: 16,
            TensorProto.INT32: 32, TensorProto.FLOAT16: 16, TensorProto.FLOAT: 32}
    total = 0
    for init in model.graph.initializer:
        if init.name.startswith(prefixes) and not init.name.endswith(("_offset", "_two")):
            total += -(-int(np.prod(init.dims, dtype=np.int64)) * bits[init.data_type] // 8)
    return total
