"""PyTorch peer of HistoFed's backbone (libs/ml backbones/), for bench:train --model backbone.

torchvision's MobileNetV2 (alpha 1.0; random weights: speed does not depend on them), cut where
HistoFed cuts the Keras one: Keras block_k is torchvision features[k + 1], and HistoFed's default
feature layer block_10_depthwise_relu is the output of features[11]'s expand and depthwise
convolutions (384 channels at a 16th of the tile size).

- mode "forward": tiles [batch, 3, size, size] -> the frozen part -> mean-pooled 384 features
  (eval mode, no gradients): what a site computes once per tile;
- mode "finetune": HistoFed's fine-tuning step from block_9_expand: input the cached feature map
  of block 8 ([batch, 64, size/16, size/16]) -> block 9 (with its residual) -> block 10's expand
  and depthwise -> mean pool -> dropout -> two heads (2 classes, 8 subtypes), cross-entropy,
  Adam; batch norm frozen (eval mode), its scale and offset train, as HistoFed's FrozenBatchNorm.

Driven over stdin: each line "STEPS" runs that many batches and prints one JSON line.
"""
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torchvision


class Frozen(nn.Module):
    def __init__(self, m):
        super().__init__()
        f = m.features
        self.body = nn.Sequential(*f[:11], f[11].conv[0], f[11].conv[1])

    def forward(self, x):
        x = x * 2 - 1
        return self.body(x).mean((2, 3))


class FineTune(nn.Module):
    def __init__(self, m):
        super().__init__()
        f = m.features
        self.block9 = f[10]
        self.block10 = nn.Sequential(f[11].conv[0], f[11].conv[1])
        self.dropout = nn.Dropout(0.25)
        self.head = nn.Linear(384, 2)
        self.subtype = nn.Linear(384, 8)

    def forward(self, x):
        x = self.block10(self.block9(x)).mean((2, 3))
        x = self.dropout(x)
        return self.head(x), self.subtype(x)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    size, batch, lr, mode = cfg["imageSize"], cfg["batch"], cfg["learningRate"], cfg["mode"]
    threads = cfg.get("threads") or os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    base = torchvision.models.mobilenet_v2()
    pool = 4
    if mode == "forward":
        model = Frozen(base).eval()
        xs = torch.rand(pool, batch, 3, size, size)
        params = sum(p.numel() for p in model.parameters())
    else:
        model = FineTune(base)
        model.train()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        side = size // 16
        xs = torch.rand(pool, batch, 64, side, side) * 3
        ys = torch.randint(0, 2, (pool, batch))
        ss = torch.randint(0, 8, (pool, batch))
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        loss_fn = nn.CrossEntropyLoss()
        params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"ready": True, "torch": torch.__version__, "torchvision": torchvision.__version__,
                      "threads": torch.get_num_threads(), "parameters": params}), flush=True)
    step = 0
    for line in sys.stdin:
        n = int(line.strip() or 0)
        if n <= 0:
            break
        start = time.perf_counter()
        loss = 0.0
        for _ in range(n):
            i = step % pool
            step += 1
            if mode == "forward":
                with torch.no_grad():
                    model(xs[i])
            else:
                opt.zero_grad(set_to_none=True)
                a, b = model(xs[i])
                out = loss_fn(a, ys[i]) + loss_fn(b, ss[i])
                out.backward()
                opt.step()
                loss = float(out.item())
        seconds = time.perf_counter() - start
        print(json.dumps({"steps": n, "seconds": seconds, "imgPerSec": n * batch / seconds, "loss": loss}), flush=True)


if __name__ == "__main__":
    main()
