"""PyTorch side of `cargo xtask bench train --torch PYTHON` (a copy of the reference in
../shared/bench/, plus peak RSS): the WORKLOADS.md U-Net (valid 3x3 convs, two 2x max-pool downsamples, fmaps 12, inc 2,
transposed-conv upsampling, 1x1 head, MSE, Adam lr 1e-4) in PyTorch: median seconds per training
step on the CPU (or a CUDA GPU), one JSON line, for side-by-side ratios with `cargo xtask bench train`.

Usage: python torch_unet_step.py [size=256] [threads=all] [dims=2|3] [device=cpu|cuda:N]   (3D: size 64)
"""
import json, resource, sys, time
import torch
from torch import nn

DIMS = 2
def conv(*a): return (nn.Conv2d if DIMS == 2 else nn.Conv3d)(*a)
def block(i, o):
    return nn.Sequential(conv(i, o, 3), nn.ReLU(), conv(o, o, 3), nn.ReLU())

def crop(x, *shape):
    sl = [slice(None), slice(None)] + [slice((s - t) // 2, (s - t) // 2 + t) for s, t in zip(x.shape[2:], shape)]
    return x[tuple(sl)]

class UNet(nn.Module):
    def __init__(self, f=12):
        super().__init__()
        up = nn.ConvTranspose2d if DIMS == 2 else nn.ConvTranspose3d
        self.d0, self.d1, self.bott = block(1, f), block(f, 2 * f), block(2 * f, 4 * f)
        self.up1, self.u1 = up(4 * f, 2 * f, 2, 2), block(4 * f, 2 * f)
        self.up0, self.u0 = up(2 * f, f, 2, 2), block(2 * f, f)
        self.head, self.pool = conv(f, 1, 1), (nn.MaxPool2d if DIMS == 2 else nn.MaxPool3d)(2)

    def forward(self, x):
        s0 = self.d0(x); s1 = self.d1(self.pool(s0)); b = self.bott(self.pool(s1))
        u = self.up1(b); u = self.u1(torch.cat([crop(s1, *u.shape[2:]), u], 1))
        u = self.up0(u); u = self.u0(torch.cat([crop(s0, *u.shape[2:]), u], 1))
        return self.head(u)

def main():
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else torch.get_num_threads()
    global DIMS
    DIMS = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    device = torch.device(sys.argv[4] if len(sys.argv) > 4 else "cpu")
    torch.set_num_threads(threads); torch.manual_seed(42)
    m = UNet().to(device); opt = torch.optim.Adam(m.parameters(), lr=1e-4)
    x = torch.randn(1, 1, *([size] * DIMS), device=device); y = torch.randn_like(m(x))
    times = []
    for i in range(8):
        t = time.perf_counter()
        # .item() waits for the GPU, as ours reads the loss back each step.
        opt.zero_grad(); loss = ((m(x) - y) ** 2).mean(); loss.backward(); opt.step(); loss.item()
        if i >= 2: times.append(time.perf_counter() - t)
    times.sort()
    print(json.dumps({"workload": f"train_step_{DIMS}d", "impl": f"torch {torch.__version__}", "device": str(device), "threads": threads,
                      "params": sum(p.numel() for p in m.parameters()), "input": list(x.shape),
                      "output": list(y.shape), "median_s": times[len(times) // 2],
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))

if __name__ == "__main__":
    main()
