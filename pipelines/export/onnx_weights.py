"""Rewrite an exported ONNX graph so each quantized weight is stored as low-bit codes + scales.

optimum exports a Linear as MatMul(x, Wᵀ) with Wᵀ an fp32 initializer [in, out]. Each such
initializer whose values equal a quantized weight we encoded (matched by content, so names do not
matter) is replaced by the kernel `ort_layout.linear_layout` names for the format:
- `MatMulNBits(x, codes, scale)` in place of the MatMul (blocked formats whose codes fit 2/4/8
  bits): codes + 2^(bits−1) as unsigned, packed along the input axis, [out, blocks, block·bits/8];
  `accuracy_level=0` in the node, so any session computes in float32;
- otherwise `DequantizeLinear(codes, scale)` feeding the same MatMul: Wᵀ's codes in the smallest
  signed container that holds them (INT4, INT8, INT16 or INT32 — stated, never hidden), blocked
  along the input axis (opset 21, `axis=0`, `block_size=K`), per-axis (`axis=1`) for channel
  scales, per-tensor for a tensor scale.
Scales are stored at their format's own width and widened in-graph (constant-folded by
onnxruntime at session start): an MX block's scale as one int8 byte — the exponent S + offset of its
step, i.e. its E8M0 exponent with the element's offset already added — turned into the step
2^(S+offset) by Cast → Pow (two folded ops: each folded intermediate leaves allocator residue at
session start); a classic-int fp16 scale as float16, Cast to float32.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pipelines.export.ort_layout import LinearLayout
from pipelines.quantize.encoding import EncodedWeight

OPSET = 21
MS_DOMAIN = "com.microsoft"
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


def _scale_nodes(prefix: str, encoded: EncodedWeight, offset: int | None, blocks: int | None = None):
    """(initializers, nodes, scale output name) computing the float32 scales: [blocks, out] as
    DequantizeLinear reads Wᵀ, or, given MatMulNBits' `blocks` per row, [out, blocks] as it reads W
    (a channel or tensor scale is stored once and repeated by a folded Expand)."""
    per_row = blocks is not None
    if encoded.exponents is not None:  # MX: one int8 byte per block, the step's exponent S + offset
        exponents = encoded.exponents.numpy().astype(np.int64) + offset
        used = encoded.codes.reshape(encoded.codes.shape[0], -1).abs().numpy() > 0
        block_used = np.zeros(exponents.shape, dtype=bool)
        k = encoded.group_size
        for b in range(exponents.shape[1]):
            block_used[:, b] = used[:, b * k:(b + 1) * k].any(axis=1)
        if ((exponents < -128) | (exponents > 127))[block_used].any():
            raise ValueError("an MX block's step 2^(S+offset) is outside 2^-128…2^127: not storable in one byte")
        stored = np.clip(exponents, -128, 127).astype(np.int8)  # an all-zero block's step is never used
        inits = [numpy_helper.from_array(stored if per_row else stored.T.copy(), f"{prefix}_exp2"),
                 numpy_helper.from_array(np.array(2.0, dtype=np.float32), f"{prefix}_two")]
        nodes = [helper.make_node("Cast", [f"{prefix}_exp2"], [f"{prefix}_e_f"], to=TensorProto.FLOAT),
                 helper.make_node("Pow", [f"{prefix}_two", f"{prefix}_e_f"], [f"{prefix}_scale"])]
        return inits, nodes, f"{prefix}_scale"
    steps = encoded.steps.numpy()
    out = encoded.codes.shape[0]
    if per_row and (steps.size == 1 or encoded.group_size == encoded.codes.shape[1]):
        half = steps.reshape(-1, 1).astype(np.float16)  # [out, 1] or [1, 1]
        inits = [numpy_helper.from_array(half, f"{prefix}_fp16"),
                 numpy_helper.from_array(np.array([out, blocks], dtype=np.int64), f"{prefix}_blocks")]
        nodes = [helper.make_node("Cast", [f"{prefix}_fp16"], [f"{prefix}_one"], to=TensorProto.FLOAT),
                 helper.make_node("Expand", [f"{prefix}_one", f"{prefix}_blocks"], [f"{prefix}_scale"])]
        return inits, nodes, f"{prefix}_scale"
    if steps.size == 1:
        half = steps.reshape(()).astype(np.float16)
    elif encoded.group_size == encoded.codes.shape[1]:  # one scale per output channel
        half = steps[:, 0].astype(np.float16)
    else:
        half = (steps if per_row else steps.T).astype(np.float16)
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


def _packed_codes(name: str, codes: np.ndarray, bits: int, block: int) -> TensorProto:
    """MatMulNBits' B: codes [out, in] + 2^(bits−1) as unsigned, padded to whole blocks, packed
    little end first (element 0 in the lowest bits of its byte): uint8 [out, blocks, block·bits/8]."""
    out, inp = codes.shape
    zero = 1 << (bits - 1)
    blocks = -(-inp // block)
    unsigned = np.full((out, blocks * block), zero, dtype=np.uint8)
    unsigned[:, :inp] = (codes + zero).astype(np.uint8)
    per_byte = 8 // bits
    lanes = unsigned.reshape(out, -1, per_byte).astype(np.uint16)
    packed = np.zeros(lanes.shape[:2], dtype=np.uint16)
    for lane in range(per_byte):
        packed |= lanes[..., lane] << (lane * bits)
    return numpy_helper.from_array(packed.astype(np.uint8).reshape(out, blocks, block * bits // 8), name)


def consumers(graph) -> dict[str, list[int]]:
    """{tensor name: indices of the nodes that read it}."""
    users: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            users.setdefault(name, []).append(i)
    return users


def _matmul_reading(users: list, name: str) -> str | None:
    """The bias ("" for none) if `name` is read by exactly one MatMul(x, name) or one plain
    Gemm(x, name, bias) (alpha = beta = 1, no transposes: GPT-2's Conv1D); None otherwise."""
    if len(users) != 1 or list(users[0].input[1:2]) != [name]:
        return None
    node = users[0]
    if node.op_type == "MatMul":
        return ""
    attrs = {a.name: (a.f if a.type == onnx.AttributeProto.FLOAT else a.i) for a in node.attribute}
    if node.op_type == "Gemm" and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 \
            and not attrs.get("transA", 0) and not attrs.get("transB", 0):
        return node.input[2] if len(node.input) > 2 else ""
    return None


def quantize_initializers(model: onnx.ModelProto, encoded: dict[str, EncodedWeight],
                          offsets: dict[str, int | None], layout: LinearLayout | None = None) -> dict[str, str]:
    """Replace every initializer equal to an encoded weight's Wᵀ; {target name: initializer name}.

    `offsets`: for MX targets the exponent offset of the element's smallest step (emin − M for
    float elements, −(P − 2) for int elements), added to the stored exponent byte; None for classic int. `layout`: the kernel to
    emit (`ort_layout.linear_layout`); None = DequantizeLinear for every weight. A weight that
    feeds anything but one MatMul or plain Gemm as its second input keeps DequantizeLinear.
    """
    graph = model.graph
    wanted = {_digest(e.dequantize().numpy().T): name for name, e in encoded.items()}
    replaced, keep = {}, []
    new_inits, new_nodes, swaps = [], [], {}
    users_of = consumers(graph)
    dims = {i.name: list(i.dims) for i in graph.initializer}
    for node in graph.node:  # optimum shares equal tensors (e.g. zero biases) through Identity nodes
        if node.op_type == "Identity" and node.input[0] in dims:
            dims[node.output[0]] = dims[node.input[0]]
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT and len(init.dims) == 2:
            target = wanted.get(_digest(numpy_helper.to_array(init)))
            if target is not None and target not in replaced:
                e, prefix = encoded[target], f"ptq/{target}"
                users = [graph.node[i] for i in users_of.get(init.name, [])]
                bias = _matmul_reading(users, init.name)
                if bias and dims.get(bias) != [e.codes.shape[0]]:
                    bias = None  # MatMulNBits takes a bias of shape [out] only
                if layout is not None and layout.op == "MatMulNBits" and bias is not None:
                    out, inp = e.codes.shape
                    block = layout.block_for(inp)
                    new_inits.append(_packed_codes(f"{prefix}_codes", e.codes.numpy(), layout.bits, block))
                    inits, nodes, scale = _scale_nodes(prefix, e, offsets[target], -(-inp // block))
                    new_inits += inits
                    new_nodes += nodes
                    extra = ["", "", bias] if bias else []
                    swaps[users_of[init.name][0]] = helper.make_node(
                        "MatMulNBits", [users[0].input[0], f"{prefix}_codes", scale, *extra], list(users[0].output),
                        name=f"{prefix}_matmul", domain=MS_DOMAIN, K=inp, N=out, bits=layout.bits,
                        block_size=block, accuracy_level=0)
                else:
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
    nodes = [swaps.get(i, n) for i, n in enumerate(graph.node)]
    del graph.node[:]
    graph.node.extend(new_nodes + nodes)
    _set_opset(model, OPSET)
    if swaps:
        use_ms_domain(model)
    return replaced


def use_ms_domain(model: onnx.ModelProto) -> None:
    """Import onnxruntime's contrib domain (com.microsoft, version 1) once."""
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))


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
        if init.name.startswith(prefixes) and not init.name.endswith(("_two", "_blocks")):
            total += -(-int(np.prod(init.dims, dtype=np.int64)) * bits[init.data_type] // 8)
    return total
