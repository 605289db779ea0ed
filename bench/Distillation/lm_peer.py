"""What the bench's PyTorch peers of language-model distillation share: the test perplexity on windows and their next
tokens (x, y: int64 [rows, seq] in an .npz, as tiny_lm_test.npz), and the distillation loop."""
import math
import time

import numpy as np
import torch
import torch.nn.functional as F


class TestWindows:
    def __init__(self, path):
        test = np.load(path)
        self.x, self.y = torch.from_numpy(test["x"]), torch.from_numpy(test["y"])

    def perplexity(self, model, batch=32):
        """exp of the mean cross-entropy of the next token, in eval mode (the model is put back in training mode)."""
        model.eval()
        nll = 0.0
        with torch.no_grad():
            for r in range(0, len(self.x), batch):
                logits = model(self.x[r : r + batch])
                nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), self.y[r : r + batch].reshape(-1), reduction="sum").item()
        model.train()
        return math.exp(nll / self.y.numel())


def distil(student, teacher, optimizer, steps, interval, windows, loss, perplexity):
    """`steps` optimizer steps on windows() -> (x, y) with loss(student logits, teacher logits, y), the teacher run in
    every step; the test perplexity every `interval` steps. Returns the perplexities and the seconds per step."""
    ppl, seconds = [], 0.0
    for step in range(1, steps + 1):
        start = time.perf_counter()
        x, y = windows()
        with torch.no_grad():
            t = teacher(x)
        value = loss(student(x), t, y)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        seconds += time.perf_counter() - start
        if step % interval == 0 or step == steps:
            ppl.append(perplexity(student))
            print(f"  PyTorch: step {step}: loss {value.item():.4f}, test perplexity {ppl[-1]:.3f}, {seconds / step:.3f} s/step so far")
    return ppl, seconds / steps
