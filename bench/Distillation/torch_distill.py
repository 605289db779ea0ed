"""Trains the same students as bench/Distillation (same initial weights, data, cached teacher logits, loss,
optimizer, schedule, epochs and batch size) in PyTorch, and prints test accuracy and wall time per seed.

    dotnet run -c Release --project bench/Distillation -- /tmp/distill-task
    /usr/bin/python3 bench/Distillation/torch_distill.py /tmp/distill-task [threads]
"""
import sys, time, math
import numpy as np
import torch
import torch.nn.functional as F

folder = sys.argv[1]
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
torch.set_num_threads(threads)
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
T, alpha = 4.0, 0.7
for name in ["wine", "breast_cancer"]:
    d = np.load(f"{folder}/{name}_task.npz")
    epochs, batch, lr, layers = d["config"]
    epochs, batch, layers = int(epochs), int(batch), int(layers)
    x, y, t = (torch.from_numpy(d[k]) for k in ("x_train", "y_train", "teacher_train"))
    xt, yt = torch.from_numpy(d["x_test"]), torch.from_numpy(d["y_test"])
    seeds = sorted({int(k[1:k.index("_")]) for k in d.files if k.startswith("s") and "_fc" in k})
    accs, walls = [], []
    for seed in seeds:
        torch.manual_seed(seed)
        mods = []
        for l in range(layers + 1):
            w = torch.from_numpy(d[f"s{seed}_fc{l}.weight"])
            lin = torch.nn.Linear(w.shape[0], w.shape[1])
            with torch.no_grad():
                lin.weight.copy_(w.t())
                lin.bias.copy_(torch.from_numpy(d[f"s{seed}_fc{l}.bias"]))
            mods.append(lin)
            if l < layers:
                mods.append(torch.nn.ReLU())
        model = torch.nn.Sequential(*mods)
        steps = epochs * math.ceil(len(x) / batch)
        opt = torch.optim.Adam(model.parameters(), lr=float(lr))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        start = time.perf_counter()
        for epoch in range(epochs):
            perm = torch.randperm(len(x))
            for i in range(0, len(x), batch):
                idx = perm[i:i + batch]
                s = model(x[idx])
                soft = F.kl_div(F.log_softmax(s / T, dim=1), F.softmax(t[idx] / T, dim=1), reduction="batchmean") * T * T
                loss = alpha * soft + (1 - alpha) * F.cross_entropy(s, y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        wall = time.perf_counter() - start
        with torch.no_grad():
            acc = (model(xt).argmax(1) == yt).float().mean().item()
        accs.append(acc); walls.append(wall)
        print(f"{name} seed {seed}: test accuracy {acc * 100:.2f} %; training loop {wall:.3f} s")
    print(f"{name}: mean test accuracy {np.mean(accs) * 100:.2f} % (min {np.min(accs) * 100:.2f} %); median training loop {np.median(walls):.3f} s")
