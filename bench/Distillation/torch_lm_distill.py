"""PyTorch side of the language-model distillation bench (bench/Distillation/LmBench.cs runs it after its own side).

Builds tiny_lm (4 pre-LN blocks, d=256, 4 heads, FFN 1024, learned positions, the causal mask as a constant) from the
teacher weights the C# side exported, checks its test perplexity, prunes half the heads (L1 norm of each head's Q, K
and V weights) and half the FFN neurons (L1 norm of each neuron's up-projection weights) of every block, checks that
it keeps the same heads and neurons as the C# side, then distils the student: 32 random windows of 128 tokens per
step, KL(teacher || student) on the logits at every position, AdamW lr 5e-4, weight decay 0.01, the teacher's
forward pass in every step. Prints the test perplexity every `interval` steps and, last, one line
"RESULT {json}" for the C# side.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 bench/Distillation/torch_lm_distill.py \
        task.npz tiny_lm_train.npy tiny_lm_test.npz [steps=600] [interval=200] [threads=2]
"""
import json
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

from lm_peer import TestWindows, distil

task, train_path, test_path = sys.argv[1:4]
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 600
interval = int(sys.argv[5]) if len(sys.argv) > 5 else 200
threads = int(sys.argv[6]) if len(sys.argv) > 6 else 2
torch.set_num_threads(threads)
torch.manual_seed(1)

weights = np.load(task)
W = {k: torch.from_numpy(np.array(weights[k])) for k in weights.files if not k.startswith("kept.")}
n_blocks = sum(1 for k in W if k.endswith(".q.w"))
d_model = W["emb.weight"].shape[1]
n_heads, context = 4, W["pos"].shape[1]


class Block(torch.nn.Module):
    def __init__(self, heads, head_dim, ffn):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        width = heads * head_dim
        self.ln1 = torch.nn.LayerNorm(d_model, eps=1e-5)
        self.q, self.k, self.v = (torch.nn.Linear(d_model, width) for _ in range(3))
        self.o = torch.nn.Linear(width, d_model)
        self.ln2 = torch.nn.LayerNorm(d_model, eps=1e-5)
        self.up = torch.nn.Linear(d_model, ffn)
        self.down = torch.nn.Linear(ffn, d_model)

    def forward(self, x, mask):
        b, s, _ = x.shape
        h = self.ln1(x)
        q, k, v = (p(h).view(b, s, self.heads, self.head_dim).transpose(1, 2) for p in (self.q, self.k, self.v))
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim) + mask[:s, :s], dim=-1)
        x = x + self.o((att @ v).transpose(1, 2).reshape(b, s, self.heads * self.head_dim))
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class Gpt(torch.nn.Module):
    def __init__(self, heads, head_dim, ffn):
        super().__init__()
        self.emb = torch.nn.Embedding(W["emb.weight"].shape[0], d_model)
        self.pos = torch.nn.Parameter(torch.zeros(1, context, d_model))
        self.register_buffer("mask", W["mask"].clone())
        self.blocks = torch.nn.ModuleList(Block(h, head_dim, f) for h, f in zip(heads, ffn))
        self.ln = torch.nn.LayerNorm(d_model, eps=1e-5)
        self.head = torch.nn.Linear(d_model, W["head.w"].shape[1], bias=False)

    def forward(self, ids):
        x = self.emb(ids) + self.pos[:, : ids.shape[1]]
        for block in self.blocks:
            x = block(x, self.mask)
        return self.head(self.ln(x))


def linear(module, name, rows=None, cols=None):
    """ONNX MatMul weights are [in, out]; torch.nn.Linear holds [out, in]. rows/cols select inputs/outputs."""
    w = W[name + ".w"]
    if rows is not None:
        w = w[rows]
    if cols is not None:
        w = w[:, cols]
    module.weight.copy_(w.t())
    if module.bias is not None:
        b = W[name + ".bias"]
        module.bias.copy_(b if cols is None else b[cols])


def build(keep_heads=None, keep_neurons=None):
    head_dim = d_model // n_heads
    heads = [n_heads if keep_heads is None else len(keep_heads[i]) for i in range(n_blocks)]
    ffn = [W[f"blocks.{i}.up.w"].shape[1] if keep_neurons is None else len(keep_neurons[i]) for i in range(n_blocks)]
    model = Gpt(heads, head_dim, ffn)
    with torch.no_grad():
        model.emb.weight.copy_(W["emb.weight"])
        model.pos.copy_(W["pos"])
        for i, block in enumerate(model.blocks):
            p = f"blocks.{i}."
            cols = None if keep_heads is None else [h * head_dim + j for h in keep_heads[i] for j in range(head_dim)]
            neurons = None if keep_neurons is None else keep_neurons[i]
            for proj in ("q", "k", "v"):
                linear(getattr(block, proj), p + proj, cols=cols)
            linear(block.o, p + "o", rows=cols)
            linear(block.up, p + "up", cols=neurons)
            linear(block.down, p + "down", rows=neurons)
            for ln in ("ln1", "ln2"):
                getattr(block, ln).weight.copy_(W[p + ln + ".weight"])
                getattr(block, ln).bias.copy_(W[p + ln + ".bias"])
        model.ln.weight.copy_(W["ln.weight"])
        model.ln.bias.copy_(W["ln.bias"])
        linear(model.head, "head")
    return model


def top_half(score):
    """Indices of the higher-scoring half, ties to the lower index, in ascending order (as the C# side)."""
    order = np.lexsort((np.arange(len(score)), -score))
    return sorted(order[: int(len(score) * 0.5 + 0.5)].tolist())


def prune():
    """Half the heads by the L1 norm of their Q, K, V weights; half the FFN neurons by the L1 norm of their up weights."""
    head_dim = d_model // n_heads
    heads, neurons = [], []
    for i in range(n_blocks):
        score = sum(np.abs(W[f"blocks.{i}.{p}.w"].numpy().astype(np.float64)).reshape(d_model, n_heads, head_dim).sum(axis=(0, 2)) for p in "qkv")
        heads.append(top_half(score))
        neurons.append(top_half(np.abs(W[f"blocks.{i}.up.w"].numpy().astype(np.float64)).sum(axis=0)))
    return heads, neurons


perplexity = TestWindows(test_path).perplexity


teacher = build()
teacher.eval()
heads, neurons = prune()
same = all(heads[i] == weights[f"kept.{i}.heads"].tolist() and neurons[i] == weights[f"kept.{i}.neurons"].tolist() for i in range(n_blocks))
student = build(heads, neurons)
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; teacher test perplexity {perplexity(teacher):.3f}; "
      f"pruned student {sum(p.numel() for p in student.parameters()):,} parameters, test perplexity {perplexity(student):.3f}; "
      f"same heads and neurons as ModelCompression: {'yes' if same else 'NO'}")

tokens = np.load(train_path, mmap_mode="r")
rng = np.random.default_rng(1)
opt = torch.optim.AdamW(student.parameters(), lr=5e-4, weight_decay=0.01)
length, batch = 128, 32


def windows():
    starts = rng.integers(0, len(tokens) - length, size=batch)
    return torch.from_numpy(np.stack([tokens[s : s + length] for s in starts]).astype(np.int64)), None


def kl(s, t, _):
    return F.kl_div(F.log_softmax(s.reshape(-1, s.shape[-1]), -1), F.log_softmax(t.reshape(-1, t.shape[-1]), -1), log_target=True, reduction="batchmean")


ppl, seconds_per_step = distil(student, teacher, opt, steps, interval, windows, kl, perplexity)
print("RESULT " + json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "ppl": ppl, "seconds_per_step": seconds_per_step, "same_student": same}))
