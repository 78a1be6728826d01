"""Logging: `mlnb.log` vs `mlflow.log_metric`, in one process, on the same sqlite store of a fresh mlnb project.

Prints one JSON line per case: {"bench": "logging", "case": ..., "mlnb": ..., "peer": ..., "unit": ..., "ratio": ...},
ratio = how many times better mlnb is. Medians of several repeats; the two sides alternate so machine noise hits both.
- "per-call vs mlflow async": µs per `mlnb.log(loss=v, step=i)` vs `mlflow.log_metric(..., synchronous=False)`,
  over 10,000 calls inside an open run (the time of the calls only). Target ratio >= 50.
- "end-to-end vs mlflow sync": metrics/s from the first of 10,000 calls until all are durably stored (mlnb: until the
  `with mlnb.run()` block has closed, which flushes; mlflow: the synchronous calls). Target ratio >= 20.
- "loop overhead": a small torch training loop (MLP 64-256-256-1, batch 256, 500 steps, one torch thread so that
  the measure does not depend on OpenMP contention) logging its loss tensor every step inside an open run (background
  flushes included; the final flush, a run-end cost, is done after the timing) vs the same loop without logging;
  2*REPEATS+1 pairs, alternating which goes first; ratio = time without / time with. Target >= 0.98.
Run: `python benchmarks/logging.py [REPEATS [E2E_REPEATS]]` (defaults 5 and 3). mlflow's synchronous side dominates the
time: 10,000 synchronous calls take 30 s on an idle machine, minutes on a loaded one.
"""
import os, sys
# this file is named like the stdlib module: keep its folder off the import path so `import logging` finds the stdlib
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') != _here]
import json, logging, statistics, tempfile, time
from pathlib import Path

N = 10_000

def setup():
    os.environ.setdefault('MLNB_TRACKING_SYSTEM_INTERVAL', '0')  # measure logging, not the sampler
    from mlnb.project import init
    prj = init(Path(tempfile.mkdtemp()) / 'bench')
    os.chdir(prj.root)
    import mlflow
    for n in ('mlflow', 'alembic'): logging.getLogger(n).setLevel(logging.WARNING)
    mlflow.set_tracking_uri(prj.tracking_uri)
    mlflow.set_experiment('bench-mlflow')
    return prj

def mlnb_run(name):
    import mlnb
    r = mlnb.run(experiment='bench-mlnb', name=name)
    r.start()
    if r._lineage is not None: r._lineage.join()  # lineage is recorded at the start, not per metric
    return r

def per_call_mlnb():
    import mlnb
    with mlnb_run('per-call') as r:
        t = time.perf_counter()
        for i in range(N): mlnb.log(loss=1.0 / (i + 1), step=i)
        dt = time.perf_counter() - t
    return dt / N * 1e6

def per_call_mlflow():
    import mlflow
    with mlflow.start_run(run_name='per-call'):
        t = time.perf_counter()
        for i in range(N): mlflow.log_metric('loss', 1.0 / (i + 1), step=i, synchronous=False)
        dt = time.perf_counter() - t
        mlflow.flush_async_logging()
    return dt / N * 1e6

def e2e_mlnb():
    import mlnb
    r = mlnb_run('e2e')
    t = time.perf_counter()
    with r:
        for i in range(N): mlnb.log(loss=1.0 / (i + 1), step=i)
    dt = time.perf_counter() - t
    from mlnb.logger import mlflow_client
    assert len(mlflow_client(mlnb.find_project().tracking_uri).get_metric_history(r.id, 'loss')) == N
    return N / dt

def e2e_mlflow():
    import mlflow
    with mlflow.start_run(run_name='e2e'):
        t = time.perf_counter()
        for i in range(N): mlflow.log_metric('loss', 1.0 / (i + 1), step=i)
        dt = time.perf_counter() - t
    return N / dt

def make_loop():
    import torch
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(),
                                torch.nn.Linear(256, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    X, y = torch.randn(256, 64), torch.randn(256, 1)
    def loop(steps, log=None):
        t = time.perf_counter()
        for i in range(steps):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(X), y)
            loss.backward(); opt.step()
            if log is not None: log(loss=loss, step=i)
        return time.perf_counter() - t
    return loop

def loop_case(pairs, steps=500):
    """Median times of `pairs` loops without and with logging, alternating which goes first. The run stays open; the
    background flushes during a logging loop are inside its time, the last flush (what a run's end costs) is done after
    the timing and before the next loop, so no logging work spills into a loop without logging."""
    import mlnb
    loop = make_loop()
    loop(50)  # warm up
    without, with_ = [], []
    with mlnb_run('loop') as r:
        def logged():
            dt = loop(steps, mlnb.log)
            r.flush()
            return dt
        for k in range(pairs):
            if k % 2: with_.append(logged()); without.append(loop(steps))
            else: without.append(loop(steps)); with_.append(logged())
    return statistics.median(without), statistics.median(with_)

def line(case, m, p, unit, ratio):
    print(json.dumps({"bench": "logging", "case": case, "mlnb": round(m, 3), "peer": round(p, 3), "unit": unit,
                      "ratio": round(ratio, 2)}), flush=True)

def main(repeats=5, e2e_repeats=3):
    setup()
    per_call_mlnb(); per_call_mlflow()  # warm: imports, the writer process, the async logging queue
    m, p = [], []
    for _ in range(repeats): m.append(per_call_mlnb()); p.append(per_call_mlflow())
    mm, pm = statistics.median(m), statistics.median(p)
    line("per-call vs mlflow async", mm, pm, "us/call", pm / mm)

    m, p = [], []
    for _ in range(e2e_repeats): m.append(e2e_mlnb()); p.append(e2e_mlflow())
    mm, pm = statistics.median(m), statistics.median(p)
    line("end-to-end vs mlflow sync", mm, pm, "metrics/s", mm / pm)

    wo, w = loop_case(2 * repeats + 1)
    line("loop overhead", w, wo, "s per 500 steps (mlnb: logging the loss every step; peer: the same loop, no logging)", wo / w)

if __name__ == '__main__':
    main(*[int(a) for a in sys.argv[1:3]])
