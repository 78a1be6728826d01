"""Training throughput on CPU: `mlnb.train` (tracking to MLflow, per-step events with a text progress renderer,
epoch-end checkpoints, all on) vs a hand-written minimal PyTorch loop. Same model, data, batch, precision (fp32),
optimizer and thread count, in one process, interleaved repeats, medians.

Both sides are timed the same way: steady-state samples/s from the end of warm-up step 5 to the end of training
(mlnb reports exactly this as `samples_per_s`; it includes its per-step logging, events and checkpoint writes,
not the one-off run creation before the first step).

Prints one JSON line: {"bench": "train", "case": "vs plain loop", "mlnb": samples_per_s, "peer": samples_per_s,
"unit": "samples/s", "ratio": mlnb/peer}. Target (issue 5): ratio >= 0.97.
"""
import os, sys
_here = os.path.dirname(os.path.abspath(__file__))  # benchmarks/logging.py would shadow the stdlib module
sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') != _here]
import io, json, statistics, tempfile, time
from pathlib import Path
import torch

N, D, H, C, BATCH, EPOCHS, WARM = 16384, 256, 512, 10, 128, 3, 5

def data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(N, D, generator=g)
    y = (X[:, :C] + 0.5 * torch.randn(N, C, generator=g)).argmax(1)
    return X, y

def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(D, H), torch.nn.ReLU(), torch.nn.Linear(H, H), torch.nn.ReLU(), torch.nn.Linear(H, C))

def plain_loop(X, y):
    "The peer: the minimal loop people write by hand."
    net = model()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    step, t0, n0, seen = 0, None, 0, 0
    for epoch in range(EPOCHS):
        perm = torch.randperm(N, generator=g)
        for i in range(0, N, BATCH):
            idx = perm[i:i + BATCH]
            xb, yb = X[idx], y[idx]
            loss = torch.nn.functional.cross_entropy(net(xb), yb)
            loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
            step += 1; seen += len(yb)
            if step == WARM: t0, n0 = time.perf_counter(), seen
    return (seen - n0) / (time.perf_counter() - t0)

def with_mlnb(X, y, prj):
    from mlnb.core import TextRenderer, events
    from mlnb.training import train
    sink = io.StringIO()
    with events.listening('*', TextRenderer(sink, min_interval=0.5)):  # progress on, as the magic/CLI show it
        r = train(model(), (X, y), epochs=EPOCHS, batch_size=BATCH, lr=1e-3, precision='fp32', devices='cpu',
                  project=prj, log_model=False, resume=False)
    assert 'train.step' in sink.getvalue() and r.run_id
    return r.samples_per_s

def main(repeats=5):
    torch.set_num_threads(1)  # small shared CPUs: one intra-op thread for both sides
    from mlnb.project import init
    with tempfile.TemporaryDirectory() as d:
        prj = init(Path(d)/'bench')
        X, y = data()
        with_mlnb(X, y, prj); plain_loop(X, y)  # warm both (imports, allocator, the tracking writer)
        m, p = [], []
        for _ in range(repeats):
            m.append(with_mlnb(X, y, prj)); p.append(plain_loop(X, y))
        mm, pm = statistics.median(m), statistics.median(p)
        print(json.dumps({"bench": "train", "case": "vs plain loop", "mlnb": round(mm, 1), "peer": round(pm, 1), "unit": "samples/s",
                          "ratio": round(mm / pm, 3), "runs": repeats, "threads": 1}))

if __name__ == '__main__': main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
