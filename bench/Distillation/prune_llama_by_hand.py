"""A stand-in for `Invoke-ModelPruning -Structured -HeadRate 0.5 -FfnRate 0.5` on tiny_llama.onnx, until the engine
prunes grouped-query attention and SwiGLU (issue 16, item 2): numpy removes, in every block, half the query heads
within each key/value group (score: L2 norm of the head's query and output weights, so the repeat factor stays whole
and the key/value heads and the cache keep their size) and half the FFN neurons (score: L2 norm of the neuron's gate,
up and down weights, gate and up pruned as one), and fixes the head counts in the reshape constants. It knows
tiny_llama's node names (PyTorch's export of its modules) and checks every constant it changes, so it refuses any
other file. The bench's PyTorch peer reads head counts and widths from the file, so it runs on this student as on the
engine's.

    /usr/bin/python3 bench/Distillation/prune_llama_by_hand.py tiny_llama.onnx student.onnx
"""
import sys

import numpy as np
import onnx
from onnx import numpy_helper

source, target = sys.argv[1:3]
model = onnx.load(source)
g = model.graph
inits = {t.name: t for t in g.initializer}
nodes = {n.name: n for n in g.node}


def weight(node, i=1):
    return numpy_helper.to_array(inits[nodes[node].input[i]])


def replace(node, value, i=1):
    name = nodes[node].input[i]
    inits[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), name))


def set_constant(node, expected, value):
    attr = nodes[node].attribute[0]
    old = numpy_helper.to_array(attr.t)
    if old.tolist() != expected:
        raise SystemExit(f"{node} holds {old.tolist()}, not {expected}: not the tiny_llama export this script knows")
    attr.t.CopyFrom(numpy_helper.from_array(np.array(value, dtype=old.dtype)))


def top(score, count):
    return np.sort(np.argsort(-score, kind="stable")[:count])


head_dim = numpy_helper.to_array(next(t for t in g.initializer if "cos" in t.name)).shape[1]
minus_one = numpy_helper.from_array(np.array([-1], dtype=np.int64), "hand_pruned_last_dim")
g.initializer.append(minus_one)
b = 0
while f"/m/blocks.{b}/q/MatMul" in nodes:
    p = f"/m/blocks.{b}/"
    q, k, o = weight(p + "q/MatMul"), weight(p + "k/MatMul"), weight(p + "o/MatMul")
    heads, kv_heads = q.shape[1] // head_dim, k.shape[1] // head_dim
    group = heads // kv_heads
    score = (q.reshape(-1, heads, head_dim) ** 2).sum(axis=(0, 2)) + (o.reshape(heads, head_dim, -1) ** 2).sum(axis=(1, 2))
    keep = np.concatenate([j * group + top(score[j * group : (j + 1) * group], group // 2) for j in range(kv_heads)])
    columns = (keep[:, None] * head_dim + np.arange(head_dim)).reshape(-1)
    replace(p + "q/MatMul", q[:, columns])
    replace(p + "o/MatMul", o[columns, :])
    kept_heads = len(keep)
    set_constant(p + "Constant_3", [heads], [kept_heads])           # q reshape [batch, seq, heads, head_dim]
    set_constant(p + "Constant_33", [group], [kept_heads // kv_heads])  # key repeat factor
    set_constant(p + "Constant_45", [group], [kept_heads // kv_heads])  # value repeat factor
    set_constant(p + "Constant_38", [heads], [kept_heads])          # repeated keys [batch, heads, seq, head_dim]
    set_constant(p + "Constant_40", [heads], [kept_heads])          # repeated values
    nodes[p + "Concat_9"].input[2] = minus_one.name                 # attention output [batch, seq, heads*head_dim]

    gate, up, down = weight(p + "gate/MatMul"), weight(p + "up/MatMul"), weight(p + "down/MatMul")
    neurons = top((gate ** 2).sum(axis=0) + (up ** 2).sum(axis=0) + (down ** 2).sum(axis=1), gate.shape[1] // 2)
    replace(p + "gate/MatMul", gate[:, neurons])
    replace(p + "up/MatMul", up[:, neurons])
    replace(p + "down/MatMul", down[neurons, :])
    print(f"block {b}: query heads {heads} -> {kept_heads} (kept {keep.tolist()}), key/value heads {kv_heads}, FFN {gate.shape[1]} -> {len(neurons)}")
    b += 1
onnx.checker.check_model(model)
onnx.save(model, target)
