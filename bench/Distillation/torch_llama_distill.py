"""PyTorch peer of the Llama distillation bench (bench/Distillation/LlamaBench.cs runs it after its own side; issue 16).

Reads the teacher (tiny_llama.onnx) and the pruned student ONNX files and builds both as PyTorch modules from their
weights: a Llama-style decoder (RMSNorm, rotary position embeddings from the model's own cos/sin tables, grouped-query
attention with each key/value head serving a whole group of query heads, SwiGLU MLP, untied head). The query and
key/value head counts and the FFN width of every block are read from the weight shapes in the file (head size from
the rotary table), so any structurally pruned student of tiny_llama works, in either layout (the decoder-with-past
export has the same weights and node names). Then it distils the student with Invoke-Distillation's defaults: 32
random windows of 128 tokens per step from tiny_lm_train.npy, loss 0.7 * T^2 * KL(softmax(t/T) || softmax(s/T)) +
0.3 * cross-entropy with the next tokens, T = 4, averaged over positions, Adam lr 1e-3, constant, the teacher's
forward pass in every step. Like Invoke-Distillation it trains every weight and keeps the rotary cos/sin tables as
they are (buffers).

With a check file (x: int64 windows, student / teacher: ONNX Runtime's logits on them, written by the C# side), it
first verifies that both modules compute what ONNX Runtime computes, so both sides start from the same point.
Prints the test perplexity every `interval` steps and, last, one line "RESULT {json}" for the C# side.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 bench/Distillation/torch_llama_distill.py \
        teacher.onnx student.onnx tiny_lm_train.npy tiny_lm_test.npz [steps=600] [interval=200] [threads=2] \
        [--check check.npz]
"""
import json
import math
import sys

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from lm_peer import TestWindows, distil

args = [a for a in sys.argv[1:] if not a.startswith("--")]
flags = sys.argv[1:]
check_path = flags[flags.index("--check") + 1] if "--check" in flags else None
if check_path in args:
    args.remove(check_path)
teacher_path, student_path, train_path, test_path = args[:4]
steps = int(args[4]) if len(args) > 4 else 600
interval = int(args[5]) if len(args) > 5 else 200
threads = int(args[6]) if len(args) > 6 else 2
torch.set_num_threads(threads)
torch.manual_seed(1)
TEMPERATURE, ALPHA, LR, LENGTH, BATCH = 4.0, 0.7, 1e-3, 128, 32


class OnnxLlama:
    """The weights and dimensions of a tiny_llama export, found through its node names (PyTorch's export of its modules)."""

    def __init__(self, path):
        model = onnx.load(path)
        g = model.graph
        self.inits = {t.name: numpy_helper.to_array(t).copy() for t in g.initializer}
        self.nodes = {n.name: n for n in g.node}
        self.blocks = 0
        while f"/m/blocks.{self.blocks}/q/MatMul" in self.nodes:
            self.blocks += 1
        if self.blocks == 0:
            raise SystemExit(f"{path}: no /m/blocks.0/q/MatMul node; not a tiny_llama export")
        tables = {name: v for name, v in self.inits.items() if v.ndim == 2 and ("cos" in name or "sin" in name)}
        self.cos = next(v for k, v in tables.items() if "cos" in k)
        self.sin = next(v for k, v in tables.items() if "sin" in k)
        self.head_dim = self.cos.shape[1]
        self.emb = self.input("/m/emb/Gather", 0)
        self.norm = self.input("/m/norm/Mul_1", 1)
        self.head = self.input("/m/head/MatMul", 1)
        self.eps = float(self.constant("/m/norm/Constant_1"))

    def input(self, node, i):
        name = self.nodes[node].input[i]
        if name not in self.inits:
            raise SystemExit(f"input {i} of node {node} is not an initializer")
        return self.inits[name]

    def constant(self, node):
        return numpy_helper.to_array(self.nodes[node].attribute[0].t)

    def matmul(self, b, name):
        return self.input(f"/m/blocks.{b}/{name}/MatMul", 1)  # [in, out]

    def block(self, b):
        q, k, ffn = self.matmul(b, "q"), self.matmul(b, "k"), self.matmul(b, "gate")
        heads, kv_heads = q.shape[1] // self.head_dim, k.shape[1] // self.head_dim
        if heads % kv_heads:
            raise SystemExit(f"block {b}: {heads} query heads do not split into groups of {kv_heads} key/value heads")
        return heads, kv_heads, ffn.shape[1]


def rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Block(torch.nn.Module):
    def __init__(self, d_model, heads, kv_heads, head_dim, ffn, eps):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim, self.eps = heads, kv_heads, head_dim, eps
        self.n1, self.n2 = torch.nn.Parameter(torch.ones(d_model)), torch.nn.Parameter(torch.ones(d_model))
        self.q = torch.nn.Linear(d_model, heads * head_dim, bias=False)
        self.k = torch.nn.Linear(d_model, kv_heads * head_dim, bias=False)
        self.v = torch.nn.Linear(d_model, kv_heads * head_dim, bias=False)
        self.o = torch.nn.Linear(heads * head_dim, d_model, bias=False)
        self.gate = torch.nn.Linear(d_model, ffn, bias=False)
        self.up = torch.nn.Linear(d_model, ffn, bias=False)
        self.down = torch.nn.Linear(ffn, d_model, bias=False)

    def forward(self, x, cos, sin, mask):
        b, s, _ = x.shape
        h = rms(x, self.n1, self.eps)
        q = self.q(h).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = self.k(h).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v(h).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        group = self.heads // self.kv_heads  # key/value head j serves query heads j*group .. (j+1)*group-1
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim) + mask, dim=-1)
        x = x + self.o((att @ v).transpose(1, 2).reshape(b, s, self.heads * self.head_dim))
        h = rms(x, self.n2, self.eps)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Llama(torch.nn.Module):
    def __init__(self, src: OnnxLlama):
        super().__init__()
        vocab, d_model = src.emb.shape
        self.eps = src.eps
        self.emb = torch.nn.Embedding(vocab, d_model)
        self.register_buffer("cos", torch.from_numpy(src.cos))
        self.register_buffer("sin", torch.from_numpy(src.sin))
        shapes = [src.block(b) for b in range(src.blocks)]
        self.blocks = torch.nn.ModuleList(Block(d_model, heads, kv, src.head_dim, ffn, src.eps) for heads, kv, ffn in shapes)
        self.norm = torch.nn.Parameter(torch.ones(d_model))
        self.head = torch.nn.Linear(d_model, src.head.shape[1], bias=False)
        with torch.no_grad():
            self.emb.weight.copy_(torch.from_numpy(src.emb))
            self.norm.copy_(torch.from_numpy(src.norm))
            self.head.weight.copy_(torch.from_numpy(src.head).t())
            for b, block in enumerate(self.blocks):
                for name in ("q", "k", "v", "o", "gate", "up", "down"):
                    getattr(block, name).weight.copy_(torch.from_numpy(src.matmul(b, name)).t())  # ONNX [in, out] -> Linear [out, in]
                block.n1.copy_(torch.from_numpy(src.input(f"/m/blocks.{b}/n1/Mul_1", 1)))
                block.n2.copy_(torch.from_numpy(src.input(f"/m/blocks.{b}/n2/Mul_1", 1)))

    def forward(self, ids):
        s = ids.shape[1]
        cos, sin = self.cos[:s][None, None], self.sin[:s][None, None]
        mask = torch.full((s, s), torch.finfo(torch.float32).min).triu(1)
        x = self.emb(ids)
        for block in self.blocks:
            x = block(x, cos, sin, mask)
        return self.head(rms(x, self.norm, self.eps))

    def shape(self):
        return [(b.heads, b.kv_heads, b.gate.out_features) for b in self.blocks]


teacher_src, student_src = OnnxLlama(teacher_path), OnnxLlama(student_path)
teacher, student = Llama(teacher_src), Llama(student_src)
teacher.eval()
for p in teacher.parameters():
    p.requires_grad_(False)

agree = None
if check_path:
    check = np.load(check_path)
    x = torch.from_numpy(check["x"])
    with torch.no_grad():
        diffs = [float((m(x) - torch.from_numpy(check[name])).abs().max()) for m, name in ((teacher, "teacher"), (student, "student"))]
    agree = max(diffs) <= 1e-3
    print(f"PyTorch modules against ONNX Runtime on {len(x)} windows: teacher max abs {diffs[0]:.2e}, student max abs {diffs[1]:.2e}" + ("" if agree else "  MISMATCH"))

perplexity = TestWindows(test_path).perplexity


trainable = [p for p in student.parameters() if p.requires_grad]
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; teacher (heads, key/value heads, FFN) per block {teacher.shape()}, "
      f"test perplexity {perplexity(teacher):.3f}; student {student.shape()}, {sum(p.numel() for p in trainable):,} trainable values, "
      f"test perplexity {perplexity(student):.3f}")

tokens = np.load(train_path, mmap_mode="r")
rng = np.random.default_rng(1)
opt = torch.optim.Adam(trainable, lr=LR)


def windows():
    starts = rng.integers(0, len(tokens) - LENGTH, size=BATCH)
    window = torch.from_numpy(np.stack([tokens[s : s + LENGTH + 1] for s in starts]).astype(np.int64))
    return window[:, :-1], window[:, 1:]


def loss(s, t, y):
    """Invoke-Distillation's: Alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - Alpha) * cross-entropy, averaged over positions."""
    s, t = s.reshape(-1, s.shape[-1]), t.reshape(-1, t.shape[-1])
    soft = F.kl_div(F.log_softmax(s / TEMPERATURE, -1), F.log_softmax(t / TEMPERATURE, -1), log_target=True, reduction="batchmean")
    return ALPHA * TEMPERATURE**2 * soft + (1 - ALPHA) * F.cross_entropy(s, y.reshape(-1))


ppl, seconds_per_step = distil(student, teacher, opt, steps, interval, windows, loss, perplexity)
print("RESULT " + json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "ppl": ppl,
                              "seconds_per_step": seconds_per_step, "same_start": agree}))
