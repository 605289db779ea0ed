"""Test perplexity of a PyTorch language model on windows and their next tokens (x, y: int64 [rows, seq] in an .npz,
as tiny_lm_test.npz), for the bench's PyTorch peers."""
import math

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
