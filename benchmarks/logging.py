"""Logging: `mlnb.log` vs `mlflow.log_metric`, in one process, on the same sqlite store of a fresh mlnb project.

Prints one JSON line per case: {"bench": "logging", "case": ..., "mlnb": ..., "peer": ..., "unit": ..., "ratio": ...},
ratio = how many times better mlnb is. Medians of several repeats; the two sides alternate so machine noise hits both.
- "per-call vs mlflow async": µs per `mlnb.log(loss=v, step=i)` vs `mlflow.log_metric(..., synchronous=False)`,
  over 10,000 calls inside an open run (the time of the calls only). Target ratio >= 50.
- "end-to-end vs mlflow sync": metrics/s from the first of 10,000 calls until all are durably stored (mlnb: until the
  `with mlnb.run()` block has closed, which flushes; mlflow: the synchronous calls). Target ratio >= 20.
- "loop overhead": a small torch training loop (MLP 64-256-256-1, batch 64, STEPS steps, one torch thread so that the
  measure does not depend on OpenMP contention) logging its loss tensor (no `.item()`) every step inside an open run,
  vs the same loop without logging. 8*REPEATS+1 triplets A-B-A' (without, with, without again: the logged loop is
  bracketed, so load that drifts within a triplet cancels); ratio = the median over triplets of mean(A, A') / B.
  Background flushes happen inside the logged loop's time; its last flush (what a run's end costs) is done after its
  timing, so no logging work spills into the next loop. Target >= 0.98. Also printed, because wall time is noisy on a
  loaded machine: "spread", the interquartile range of the triplet ratios; "control" and "control_spread", the same
  for A / A' (two loops without logging: what the machine's noise alone gives); "cpu_ratio", the median ratio of
  this process's CPU times (the hot path and the flush thread; immune to waiting for a CPU); "writer_cpu", the writer
  process's CPU time as a fraction of the logged loop's (MLflow's ORM work, done in parallel: on another core when
  there is one); "log_us", the µs one `mlnb.log(loss=loss, step=i)` takes inside the loop (the CPU time of each
  call, less that of an empty call); "faults" and "peer_faults", the median page faults of a loop with and without
  logging (mlnb keeps the heap from being trimmed and faulted in again every step, `perf.malloc_tuning`).
Run: `python benchmarks/logging.py [REPEATS [E2E_REPEATS]] [CASE ...]` (defaults 5 and 3; CASE: per-call, end-to-end,
loop; default all). mlflow's synchronous side dominates the time: 10,000 synchronous calls take 30 s on an idle
machine, minutes on a loaded one.
"""
import os, sys
# this file is named like the stdlib module: keep its folder off the import path so `import logging` finds the stdlib
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') != _here]
import json, logging, statistics, tempfile, time
STEPS = 500
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
    from mlnb.track.store import mlflow_client
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
    X, y = torch.randn(64, 64), torch.randn(64, 1)
    def loop(steps, log=None):
        "(wall seconds, this process's CPU seconds, page faults) of `steps` training steps, logging the loss tensor when `log`."
        f, t, c = faults(), time.perf_counter(), time.process_time()
        for i in range(steps):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(X), y)
            loss.backward(); opt.step()
            if log is not None: log(loss=loss, step=i)
        return time.perf_counter() - t, time.process_time() - c, faults() - f
    return loop

def faults():
    "This process's minor page faults so far (a heap that glibc trims is faulted in again, zeroed: see `mlnb.track.logger.tune_malloc`)."
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def loop_case(n, steps=STEPS):
    """`n` triplets: a loop without logging, one with, one without again (A-B-A: the logged loop is bracketed, so that
    load drifting within a triplet cancels). Medians of: wall times, the ratio mean(A, A') / B of wall times and of
    this process's CPU times, the control ratio A / A' (1 plus noise), and the writer's CPU share of the logged loop."""
    import mlnb, psutil
    loop = make_loop()
    loop(100); loop(100, None)  # warm up
    walls, ratios, cpu_ratios, controls, writer, flts = ([], []), [], [], [], [], ([], [])
    with mlnb_run('loop') as r:
        w = psutil.Process(r._buf._proc.pid)
        def wcpu(): t = w.cpu_times(); return t.user + t.system
        loop(100, mlnb.log); r.flush()  # warm: the first tensors, the writer's first batch
        def logged():
            c0 = wcpu()
            dt = loop(steps, mlnb.log)
            r.flush()  # the end of the run: after the timing, before the next loop
            writer.append((wcpu() - c0) / dt[1])
            return dt
        for k in range(n):
            a, b, a2 = loop(steps), logged(), loop(steps)
            walls[0].append((a[0] + a2[0]) / 2); walls[1].append(b[0])
            flts[0].append((a[2] + a2[2]) / 2); flts[1].append(b[2])
            ratios.append((a[0] + a2[0]) / 2 / b[0]); cpu_ratios.append((a[1] + a2[1]) / 2 / b[1]); controls.append(a[0] / a2[0])
        # the hot path alone: CPU time of each call inside the loop (cold caches after each step), less the timer's cost
        def timed(fn, acc):
            def call(**kw): t = time.thread_time(); fn(**kw); acc[0] += time.thread_time() - t
            return call
        inlog, empty = [0.0], [0.0]
        for _ in range(3):
            loop(steps, timed(mlnb.log, inlog)); loop(steps, timed(lambda **kw: None, empty)); r.flush()
        log_us = (inlog[0] - empty[0]) / (3 * steps) * 1e6
    med, iqr = statistics.median, lambda xs: (lambda q: q[2] - q[0])(statistics.quantiles(xs, n=4))
    return dict(without=med(walls[0]), with_=med(walls[1]), ratio=med(ratios), spread=iqr(ratios), control=med(controls),
                control_spread=iqr(controls), cpu_ratio=med(cpu_ratios), writer_cpu=med(writer), log_us=log_us,
                faults=med(flts[1]), peer_faults=med(flts[0]))

def line(case, m, p, unit, ratio, **extra):
    print(json.dumps({"bench": "logging", "case": case, "mlnb": round(m, 3), "peer": round(p, 3), "unit": unit,
                      "ratio": round(ratio, 3), **{k: round(v, 3) for k, v in extra.items()}}), flush=True)

def main(repeats=5, e2e_repeats=3, cases=('per-call', 'end-to-end', 'loop')):
    setup()
    if 'per-call' in cases:
        per_call_mlnb(); per_call_mlflow()  # warm: imports, the writer process, the async logging queue
        m, p = [], []
        for _ in range(repeats): m.append(per_call_mlnb()); p.append(per_call_mlflow())
        mm, pm = statistics.median(m), statistics.median(p)
        line("per-call vs mlflow async", mm, pm, "us/call", pm / mm)

    if 'end-to-end' in cases:
        m, p = [], []
        for _ in range(e2e_repeats): m.append(e2e_mlnb()); p.append(e2e_mlflow())
        mm, pm = statistics.median(m), statistics.median(p)
        line("end-to-end vs mlflow sync", mm, pm, "metrics/s", mm / pm)

    if 'loop' in cases:
        res = loop_case(8 * repeats + 1)
        line("loop overhead", res.pop('with_'), res.pop('without'),
             f"s per {STEPS} steps (mlnb: logging the loss tensor every step; peer: the same loop, no logging)", res.pop('ratio'), **res)

if __name__ == '__main__':
    nums, names = [int(a) for a in sys.argv[1:] if a.isdigit()], [a for a in sys.argv[1:] if not a.isdigit()]
    main(*nums[:2], **({'cases': names} if names else {}))
