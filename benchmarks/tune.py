"""Per-trial overhead of tuning: 300 trivial trials with `mlnb.tune` (default journal storage in the project, tracking on:
a parent run and one nested MLflow run per trial, written in batches) vs plain Optuna without tracking, on the same kind of
storage. Same sampler (random, seeded: TPE's own cost would dominate both and hide the overhead), no pruning, one process.
Repeats interleave peer and mlnb (A/B/A/B) so that load on a shared machine hits both alike; "mlnb" and "peer" are the
medians, "ratio" the median of the paired ratios peer_i/mlnb_i.

Prints one JSON line per case: {"bench": "tune", "case": "vs optuna journal" | "vs optuna sqlite", "mlnb": ms_per_trial,
"peer": ms_per_trial, "unit": "ms/trial", "ratio": peer/mlnb}. Target (issue 6): ratio >= 0.5 for the journal case.
"""
import os, sys
_here = os.path.dirname(os.path.abspath(__file__))  # benchmarks/logging.py would shadow the stdlib module
sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') != _here]
import json, statistics, tempfile, time
import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

N, REPEATS = 300, 5
SPACE = {"x": (-10.0, 10.0), "y": (-10.0, 10.0)}

def objective(p): return (p['x'] - 2) ** 2 + (p['y'] + 1) ** 2

def peer(storage):
    def obj(t): return objective({'x': t.suggest_float('x', -10, 10), 'y': t.suggest_float('y', -10, 10)})
    st = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0), direction='minimize')
    t0 = time.perf_counter(); st.optimize(obj, n_trials=N)
    return (time.perf_counter() - t0) / N * 1000

def ours(prj, storage, i):
    from mlnb.tuning.study import tune
    t0 = time.perf_counter()
    res = tune(objective, SPACE, n_trials=N, sampler='random', pruner='none', seed=0, study=f"bench{i}", storage=storage, project=prj)
    dt = time.perf_counter() - t0
    assert len(res.trials) == N
    return dt / N * 1000

def main():
    from mlnb.project import init
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as d:
        prj = init(f"{d}/p")
        os.chdir(prj.root)
        ours(prj, None, 'warm')  # imports, experiment, writer process
        for case, mk_peer, mk_ours in [
            ("vs optuna journal", lambda i: JournalStorage(JournalFileBackend(f"{d}/peer{i}.log")), lambda i: None),
            ("vs optuna sqlite", lambda i: f"sqlite:///{d}/peer{i}.db", lambda i: f"sqlite:///{d}/ours{i}.db")]:
            m, p = [], []
            for i in range(REPEATS):
                p.append(peer(mk_peer(i)))
                m.append(ours(prj, mk_ours(i), f"{case[-6:]}{i}"))
            mm, pm, ratio = statistics.median(m), statistics.median(p), statistics.median(b / a for a, b in zip(m, p))
            print(json.dumps({"bench": "tune", "case": case, "mlnb": round(mm, 3), "peer": round(pm, 3), "unit": "ms/trial", "ratio": round(ratio, 3)}), flush=True)

if __name__ == "__main__":
    main()
