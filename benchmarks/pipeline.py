"""Pipeline: a 5-step chain of small notebooks, mlnb (`reproduce`, DVC caching, steps in-process) vs papermill.

Prints JSON lines {"bench": "pipeline", "case": ..., "mlnb": s, "peer": s, "unit": "s", "ratio": peer/mlnb}:
- `cold run vs sequential papermill`: a fresh project's first `mlnb run` vs papermill executing the 5 notebooks
  one after the other in this process. Target ratio >= 0.83.
- `no-change rerun vs cold run`: a second `mlnb run` with nothing changed (peer: mlnb's cold run). Target >= 10.
- `one-param rerun`: a parameter of step 3 changes; "steps_run" must be 3 (steps 3, 4 and 5 depend on it).
"""
import os, sys
# benchmarks/logging.py (the tracking benchmark) would shadow the standard library's logging: drop this folder
sys.path[:] = [q for q in sys.path if os.path.abspath(q or '.') != os.path.dirname(os.path.abspath(__file__))]
import json, logging, shutil, statistics, sys, tempfile, time
from pathlib import Path
import nbformat

N, REPEATS = 5, 3

def make_nb(path, i):
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell("scale = 1"); p.metadata['tags'] = ['parameters']
    src = "x = 1" if i == 0 else f"x = int(open('out{i-1}.txt').read())"
    nb.cells = [p, nbformat.v4.new_code_cell(src), nbformat.v4.new_code_cell(f"open('out{i}.txt', 'w').write(str(x * scale + 1))")]
    nb.metadata['kernelspec'] = dict(name='python3', display_name='Python 3', language='python')
    nbformat.write(nb, str(path))

def make_project(d):
    from mlnb.project import init
    from mlnb.pipeline.dag import pipeline_add
    prj = init(Path(d)/'p')
    os.chdir(prj.root)
    (prj.root/'params.yaml').write_text(''.join(f"s{i}:\n  scale: 1\n" for i in range(N)))
    for i in range(N):
        make_nb(prj.root/f"s{i}.ipynb", i)
        pipeline_add(f"s{i}.ipynb", deps=[f"out{i-1}.txt"] if i else [], outs=[f"out{i}.txt"], params=f"s{i}")
    return prj

def papermill_sequential(root):
    import papermill as pm
    t = time.perf_counter()
    for i in range(N):
        pm.execute_notebook(str(root/f"s{i}.ipynb"), str(root/'.mlnb'/'runs'/f"pm-{i}.ipynb"), parameters={'scale': 1},
                            progress_bar=False, cwd=str(root))
    return time.perf_counter() - t

def main():
    logging.disable(logging.WARNING)
    from mlnb.pipeline.dag import reproduce
    from mlnb.pipeline.steps import set_params
    cwd = os.getcwd()
    cold, peer, rerun, one, steps = [], [], [], [], set()
    try:
        for _ in range(REPEATS):
            with tempfile.TemporaryDirectory() as d:
                prj = make_project(d)
                peer.append(papermill_sequential(prj.root))
                for f in prj.root.glob('out*.txt'): f.unlink()
                t = time.perf_counter(); r = reproduce(); cold.append(time.perf_counter() - t)
                assert len(r.ran) == N, r
                t = time.perf_counter(); r = reproduce(); rerun.append(time.perf_counter() - t)
                assert not r.ran, r
                t = time.perf_counter(); r = reproduce(set=["s2.scale=3"]); one.append(time.perf_counter() - t)
                steps.add(len(r.ran))
                os.chdir(cwd)
    finally: os.chdir(cwd)
    c, p, rr, o = map(statistics.median, (cold, peer, rerun, one))
    print(json.dumps({"bench": "pipeline", "case": "cold run vs sequential papermill", "mlnb": round(c, 3), "peer": round(p, 3), "unit": "s", "ratio": round(p / c, 2)}))
    print(json.dumps({"bench": "pipeline", "case": "no-change rerun vs cold run", "mlnb": round(rr, 3), "peer": round(c, 3), "unit": "s", "ratio": round(c / rr, 1)}))
    print(json.dumps({"bench": "pipeline", "case": "one-param rerun", "mlnb": round(o, 3), "peer": round(c, 3), "unit": "s", "ratio": round(c / o, 2),
                      "steps_run": sorted(steps)[0] if len(steps) == 1 else sorted(steps)}))

if __name__ == '__main__': main()
