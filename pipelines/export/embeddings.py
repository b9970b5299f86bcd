"""Token embeddings and the output layer at 16 bits, stored once: no fp32 table, no transposed copy.

optimum exports a tied model's output layer as MatMul(h, Transpose(embed_tokens)) next to
Gather(embed_tokens, ids): onnxruntime folds the Transpose into a second float32 table at session
start, beside the first. Here the table is stored once, as float16:
- the Gather reads the float16 table and widens only the rows it gathered (Cast after the Gather);
- the output layer is FusedMatMul(h, Cast(table), transB=1) (com.microsoft), which reads the
  [vocab, hidden] table as it is: no transposed copy. onnxruntime folds the Cast and packs the
  float32 result for its GEMM at session start (it has no float16 × float32 kernel on CPU), so the
  output layer is held once, as float32, and the float16 table once for the Gather.
optimum sometimes exports a tied output layer as a transposed copy ([hidden, vocab] initializer,
Gemma-3): a copy equal to the table's transpose is dropped and read from the table the same way. A
truly untied output layer is stored as float16 + Cast. The
PyTorch model is rounded to the same float16 values before it is measured (`round_embeddings`), so
the export reproduces it exactly and the measured loss includes the rounding.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pipelines.export.onnx_weights import MS_DOMAIN, consumers, use_ms_domain


def round_embeddings(model) -> int:
    """Round the token embedding and an output layer to float16 values in place; elements rounded."""
    import torch

    seen, count = set(), 0
    with torch.no_grad():
        for module in (model.get_input_embeddings(), model.get_output_embeddings()):
            if module is not None and id(module.weight) not in seen:
                seen.add(id(module.weight))
                module.weight.copy_(module.weight.half().float())
                count += module.weight.numel()
    return count


def _half(init: TensorProto) -> TensorProto:
    values = numpy_helper.to_array(init)
    half = values.astype(np.float16)
    if not np.array_equal(half.astype(np.float32), values):
        raise ValueError(f"{init.name} is not on the float16 grid: round the model first (round_embeddings)")
    return numpy_helper.from_array(half, f"{init.name}_fp16")


def store_embeddings_once(model: onnx.ModelProto, vocab_size: int) -> dict:
    """Rewrite the token embedding [vocab, hidden] and the output layer as float16 stored once.

    Returns {"embedding": name, "output_layer": "tied" | name | None, "bytes": file bytes}.
    """
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    users = consumers(graph)
    table = next((n.input[0] for n in graph.node if n.op_type == "Gather" and n.input[0] in inits
                  and inits[n.input[0]].data_type == TensorProto.FLOAT
                  and list(inits[n.input[0]].dims)[:1] == [vocab_size]), None)
    if table is None:
        raise ValueError(f"no Gather reads a float [{vocab_size}, hidden] initializer: no token embedding found")
    halves, casts, drop_nodes, drop_inits, swaps = [], [], set(), set(), {}
    halves.append(_half(inits[table]))
    wide = f"{table}_float32"
    casts.append(helper.make_node("Cast", [f"{table}_fp16"], [wide], name=f"{table}_widen", to=TensorProto.FLOAT))
    for i in users.get(table, []):
        node = graph.node[i]
        if node.op_type == "Gather" and node.input[0] == table:  # gather float16 rows, widen those
            rows = f"{node.output[0]}_fp16"
            swaps[i] = [helper.make_node("Gather", [f"{table}_fp16", node.input[1]], [rows], name=node.name,
                                         axis=next((a.i for a in node.attribute if a.name == "axis"), 0)),
                        helper.make_node("Cast", [rows], [node.output[0]], name=f"{node.name}_widen",
                                         to=TensorProto.FLOAT)]
    head = None
    for i in users.get(table, []):
        node = graph.node[i]
        if node.op_type != "Transpose":
            continue
        readers = [graph.node[j] for j in users.get(node.output[0], [])]
        if len(readers) != 1 or readers[0].op_type != "MatMul" or readers[0].input[1] != node.output[0]:
            continue  # not the output layer: leave this Transpose alone
        drop_nodes.add(i)
        reader = users[node.output[0]][0]
        swaps[reader] = [helper.make_node("FusedMatMul", [readers[0].input[0], wide], list(readers[0].output),
                                          name=f"{table}_output_layer", domain=MS_DOMAIN, transB=1, alpha=1.0)]
        head = "tied"
    if head is None:  # an output layer of its own: a [hidden, vocab] initializer read by a MatMul
        values = None
        for name, init in inits.items():
            if (init.data_type == TensorProto.FLOAT and len(init.dims) == 2 and init.dims[1] == vocab_size
                    and name != table and users.get(name)
                    and all(graph.node[j].op_type == "MatMul" and graph.node[j].input[1] == name
                            for j in users[name])):
                values = numpy_helper.to_array(inits[table]) if values is None else values
                if np.array_equal(numpy_helper.to_array(init).T, values):  # tied, exported as a transposed copy
                    for j in users[name]:
                        swaps[j] = [helper.make_node("FusedMatMul", [graph.node[j].input[0], wide],
                                                     list(graph.node[j].output), name=f"{table}_output_layer",
                                                     domain=MS_DOMAIN, transB=1, alpha=1.0)]
                    drop_inits.add(name)
                    head = "tied"
                else:
                    halves.append(_half(init))
                    casts.append(helper.make_node("Cast", [f"{name}_fp16"], [name], name=f"{name}_widen",
                                                  to=TensorProto.FLOAT))
                    head = name
                break
    other = [graph.node[i] for i in users.get(table, []) if i not in swaps and i not in drop_nodes]
    if other:
        raise ValueError(f"{table} is read by {other[0].op_type} too: not a token embedding this export knows")
    if head != "tied":
        casts.pop(0)  # only the Gather reads the table
    widened = {table} | drop_inits | ({head} if head not in (None, "tied") else set())
    kept = [i for i in graph.initializer if i.name not in widened]
    del graph.initializer[:]
    graph.initializer.extend(kept + halves)
    nodes = []
    for i, node in enumerate(graph.node):
        if i not in drop_nodes:
            nodes += swaps.get(i, [node])
    del graph.node[:]
    graph.node.extend(casts + nodes)
    if head == "tied":
        use_ms_domain(model)
    return {"embedding": table, "output_layer": head,
            "bytes": sum(int(np.prod(h.dims, dtype=np.int64)) * 2 for h in halves)}
