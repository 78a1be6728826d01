"""Training throughput on CPU: `mlnb.train` (tracking to MLflow, per-step events with a text progress renderer on)
vs a hand-written minimal PyTorch loop. Same model, data, batch, precision (fp32), optimizer and thread count, in one
process.

Robust by design on a small, shared, loaded machine:
- every repetition is one whole training call (`STEPS` optimizer steps), timed the same way on both sides by this
  script's own clock: from the end of warm-up step WARM to the end of the last step (for mlnb, two `train.step`
  events; everything between them counts: data, per-step logging, events, progress rendering). One epoch, so no
  epoch-end checkpoint falls in the window: a checkpoint is an fsync'd file whose time on a shared disk is noise
  here, and mlnb reports it apart (`TrainResult.checkpoint_s`);
- repetitions alternate A/B/B/A (mlnb, plain, plain, mlnb, ...) so that drifts in the machine's load cancel, and the
  result is the median of the paired ratios, with both sides' medians beside it;
- two more views of the same runs, less sensitive to the machine's load: the same pairs timed in CPU seconds (this
  process plus mlnb's tracking writer process: what mlnb costs in work, whatever the other users of the machine
  do, `cpu_ratio`), and the median time of one step over all steps of all runs (a load spike hits some steps, not
  the median; mlnb's step is the time between two `train.step` events, all its per-step work included, `step_ratio`);
- page faults per step on each side (`faults_per_step`, `peer_faults_per_step`): with glibc's defaults the heap is
  trimmed and faulted in again, zeroed, step after step (10-20% of a step here, varying from run to run); mlnb's
  first `train` of the process turns that off process-wide (`perf.malloc_tuning`), so the peer that runs after it in
  the same process gains as much, and the ratio compares the loops, not the heap's luck.

Prints one JSON line: {"bench": "train", "case": "vs plain loop", "mlnb": samples_per_s, "peer": samples_per_s,
"unit": "samples/s", "ratio": median of mlnb/peer, ...}. Target (issue 5): ratio >= 0.97.
Usage: python benchmarks/train.py [PAIRS]
"""
import os, sys
_here = os.path.dirname(os.path.abspath(__file__))  # benchmarks/logging.py would shadow the stdlib module
sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') != _here]
import io, json, statistics, tempfile, time
from pathlib import Path
import torch

N, D, H, C, BATCH, EPOCHS, WARM = 32768, 256, 512, 10, 128, 1, 10
STEPS = EPOCHS * (N // BATCH)

def data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(N, D, generator=g)
    y = (X[:, :C] + 0.5 * torch.randn(N, C, generator=g)).argmax(1)
    return X, y

def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(D, H), torch.nn.ReLU(), torch.nn.Linear(H, H), torch.nn.ReLU(), torch.nn.Linear(H, C))

class Clock:
    "Wall and CPU time (this process, plus the tracking writer process when there is one)."
    def __init__(self): self.marks, self.steps, self.last = {}, [], None
    def tick(self):
        t = time.perf_counter()
        if self.last is not None: self.steps.append(t - self.last)
        self.last = t
    def cpu(self):
        t = time.process_time()
        try:
            import psutil
            from mlnb.track import logger
            p = logger._BUFFER._proc if logger._BUFFER is not None else None
            if p is not None and p.poll() is None: ct = psutil.Process(p.pid).cpu_times(); t += ct.user + ct.system
        except Exception: pass
        return t
    def mark(self, k): self.marks[k] = (time.perf_counter(), self.cpu(), faults())
    def rates(self, samples):
        (w0, c0, f0), (w1, c1, f1) = self.marks['warm'], self.marks['end']
        return samples / (w1 - w0), samples / (c1 - c0), self.steps, (f1 - f0) / len(self.steps)

def faults():
    "This process's minor page faults so far (a heap that glibc trims is faulted in again, zeroed, on the next step)."
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def plain_loop(X, y):
    "The peer: the minimal loop people write by hand."
    net = model()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    clock, step = Clock(), 0
    for epoch in range(EPOCHS):
        perm = torch.randperm(N, generator=g)
        for i in range(0, N, BATCH):
            idx = perm[i:i + BATCH]
            xb, yb = X[idx], y[idx]
            loss = torch.nn.functional.cross_entropy(net(xb), yb)
            loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
            step += 1
            if step > WARM: clock.tick()
            if step == WARM: clock.mark('warm'); clock.tick()
    clock.mark('end')
    return clock.rates((STEPS - WARM) * BATCH)

def with_mlnb(X, y, prj):
    "mlnb with tracking on and progress lines rendered (to a buffer, as the CLI prints them)."
    from mlnb.core import TextRenderer, events
    from mlnb.training.loop import train
    sink, clock = io.StringIO(), Clock()
    def at(ev):
        s = ev.data['step']
        if s >= WARM: clock.tick()
        if s == WARM: clock.mark('warm')
        elif s == STEPS: clock.mark('end')
    with events.listening('*', TextRenderer(sink, min_interval=0.5)), events.listening('train.step', at):
        r = train(model(), (X, y), epochs=EPOCHS, batch_size=BATCH, lr=1e-3, precision='fp32', devices='cpu',
                  project=prj, log_model=False, resume=False)
    assert 'train.step' in sink.getvalue() and r.run_id and r.steps == STEPS
    return clock.rates((STEPS - WARM) * BATCH)

def main(pairs=10):
    torch.set_num_threads(1)  # small shared CPUs: one intra-op thread for both sides
    from mlnb.project import init
    with tempfile.TemporaryDirectory() as d:
        prj = init(Path(d)/'bench')
        X, y = data()
        with_mlnb(X, y, prj); plain_loop(X, y)  # warm both (imports, allocator, the tracking writer)
        m, p = [], []
        for i in range(pairs):  # A B, B A, A B, ...
            if i % 2 == 0: m.append(with_mlnb(X, y, prj)); p.append(plain_loop(X, y))
            else: p.append(plain_loop(X, y)); m.append(with_mlnb(X, y, prj))
        ratios = [a[0] / b[0] for a, b in zip(m, p)]
        cpu = [a[1] / b[1] for a, b in zip(m, p)]
        step = statistics.median(t for b in p for t in b[2]) / statistics.median(t for a in m for t in a[2])
        print(json.dumps({"bench": "train", "case": "vs plain loop", "mlnb": round(statistics.median(a[0] for a in m), 1),
                          "peer": round(statistics.median(b[0] for b in p), 1), "unit": "samples/s",
                          "ratio": round(statistics.median(ratios), 3), "cpu_ratio": round(statistics.median(cpu), 3), "step_ratio": round(step, 3),
                          "pair_ratios": [round(r, 3) for r in ratios], "pairs": pairs,
                          "faults_per_step": round(statistics.median(a[3] for a in m), 1), "peer_faults_per_step": round(statistics.median(b[3] for b in p), 1), "steps": STEPS, "batch": BATCH, "threads": 1,
                          "load_1m": round(os.getloadavg()[0], 1), "cpus": os.cpu_count()}))

if __name__ == '__main__': main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
