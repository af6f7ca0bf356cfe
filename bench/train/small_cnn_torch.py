"""PyTorch peer of HistoFed's classifiers (libs/ml models.ts), for bench:train.

Same architectures: input centred (x * 2 - 1), conv 3x3 'same' 16/32/64 + ReLU (+ for se-cnn a
squeeze-and-excitation gate: global mean -> dense c/8 + ReLU -> dense c + sigmoid -> scale) +
max-pool 2, global average pooling, dense 64 + ReLU, dropout 0.25, dense 2 + softmax
cross-entropy; same optimizer (Adam), same batch and input size, random inputs. Driven over stdin so that the TypeScript benchmark can
alternate: each line "STEPS" runs that many training steps and prints one JSON line.
"""
import json
import os
import sys
import time

import torch
import torch.nn as nn


class Center(nn.Module):
    def forward(self, x):
        return x * 2 - 1


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, ratio: int = 8):
        super().__init__()
        hidden = max(2, round(channels / ratio))
        self.reduce = nn.Linear(channels, hidden)
        self.expand = nn.Linear(hidden, channels)

    def forward(self, x):
        s = torch.sigmoid(self.expand(torch.relu(self.reduce(x.mean((2, 3))))))
        return x * s[:, :, None, None]


def build(kind: str = "se-cnn", width: float = 1.0, dense: int = 64, classes: int = 2) -> nn.Module:
    f = [max(1, round(c * width)) for c in (16, 32, 64)]
    layers = [Center()]
    inputs = 3
    for c in f:
        layers += [nn.Conv2d(inputs, c, 3, padding=1), nn.ReLU()]
        if kind == "se-cnn":
            layers.append(SqueezeExcite(c))
        layers.append(nn.MaxPool2d(2))
        inputs = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(f[2], dense), nn.ReLU(), nn.Dropout(0.25), nn.Linear(dense, classes)]
    return nn.Sequential(*layers)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    size, batch, lr = cfg["imageSize"], cfg["batch"], cfg["learningRate"]
    threads = cfg.get("threads") or os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.get("seed", 1))
    model = build(cfg.get("kind", "se-cnn"))
    channels_last = cfg.get("channelsLast", False)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    pool = 8
    xs = torch.rand(pool, batch, 3, size, size)
    if channels_last:
        xs = torch.stack([x.contiguous(memory_format=torch.channels_last) for x in xs])
    ys = torch.randint(0, 2, (pool, batch))
    model.train()
    step = 0
    print(json.dumps({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "parameters": sum(p.numel() for p in model.parameters())}), flush=True)
    for line in sys.stdin:
        n = int(line.strip() or 0)
        if n <= 0:
            break
        start = time.perf_counter()
        loss = None
        for _ in range(n):
            i = step % pool
            step += 1
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xs[i]), ys[i])
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - start
        print(json.dumps({"steps": n, "seconds": seconds, "imgPerSec": n * batch / seconds,
                          "loss": float(loss.item())}), flush=True)


if __name__ == "__main__":
    main()
