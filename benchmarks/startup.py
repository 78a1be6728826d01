"""Startup: `import mlnb` + `%load_ext mlnb` in an IPython shell vs `import mlflow`, each in fresh processes.

Prints one JSON line: {"bench": "startup", "case": "load_ext vs import mlflow", "mlnb": s, "peer": s, "unit": "s",
"ratio": peer/mlnb, "heavy_loaded": [...]}. Target (issue 2): mlnb <= 0.3 s median, ratio >= 5, heavy_loaded empty.
"""
import json, statistics, subprocess, sys

HEAVY = ['torch', 'mlflow', 'evidently', 'shap', 'transformers', 'papermill', 'dvc', 'optuna', 'sklearn']

MLNB = f"""
import sys, time, json
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()            # the notebook's shell exists before the user types anything
t = time.perf_counter()
import mlnb
ip.run_line_magic('load_ext', 'mlnb')
dt = time.perf_counter() - t
print(json.dumps(dict(t=dt, heavy=[m for m in {HEAVY!r} if m in sys.modules])))
"""
PEER = """
import time, json
t = time.perf_counter()
import mlflow
print(json.dumps(dict(t=time.perf_counter() - t, heavy=[])))
"""

def once(code):
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])

def main(repeats=7):
    once(MLNB); once(PEER)  # warm the OS file cache for both
    m, p, heavy = [], [], set()
    for _ in range(repeats):  # interleaved, so machine noise hits both alike
        a = once(MLNB); m.append(a['t']); heavy |= set(a['heavy'])
        p.append(once(PEER)['t'])
    mm, pm = statistics.median(m), statistics.median(p)
    print(json.dumps({"bench": "startup", "case": "load_ext vs import mlflow", "mlnb": round(mm, 4), "peer": round(pm, 4),
                      "unit": "s", "ratio": round(pm / mm, 1), "heavy_loaded": sorted(heavy)}))

if __name__ == '__main__': main()
