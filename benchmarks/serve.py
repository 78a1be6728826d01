"""Serving throughput: `mlnb serve` (micro-batching) against the classic FastAPI tutorial endpoint that calls the model
once per request, same registered model loaded through MLflow's pyfunc on both sides, one uvicorn process each, real
HTTP load on loopback at concurrency 32.

Prints one JSON line per case:
{"bench": "serve", "case": ..., "mlnb": req_per_s, "peer": req_per_s, "unit": "req/s", "ratio": mlnb/peer,
 "mlnb_p95_ms": ..., "peer_p95_ms": ..., "errors": n}

Cases: `mlp batched vs naive` (a torch MLP, 256 inputs, four hidden layers of 1024) and `transformer batched vs
naive` (a 2-layer BERT built from a config, hidden 32, sequences of 64 token ids; the Hugging Face module itself, as
a user logs it with `mlflow.pytorch`). Both are small enough that one call per request is dominated by per-call cost,
the regime micro-batching is for (a model whose batch-1 call is already compute-bound gains little from batching).

Robust by design on a shared, loaded machine: both servers of a case run side by side for the whole case; the load
comes from separate processes (two raw asyncio HTTP/1.1 keep-alive clients on uvloop, half the connections each, so
the client is not the bottleneck) that send a fixed number of requests per round; rounds alternate peer/mlnb in ABBA order; `mlnb` and `peer` are medians
over rounds, `ratio` is the median of the per-pair ratios, p95s are medians of the rounds' p95s, `errors` counts every
non-200 or failed request of every round. `mlnb_cpu_ms_per_req` and `peer_cpu_ms_per_req` (medians) are the CPU time
each server process spent per request: what the throughput would be bound by on a machine with no other load.

    python benchmarks/serve.py [--requests 2000] [--repeats 3] [--concurrency 32] [--case mlp|transformer]

mlnb's server runs with the project's settings (serve.max_batch, serve.max_wait_ms, serve.torch_threads, ...);
MLNB_SERVE_* environment variables change them.
"""
import os, sys
# run as `python benchmarks/serve.py`, this folder is sys.path[0]; a sibling benchmark named like a stdlib module
# (benchmarks/logging.py) would shadow it, so take the folder off the path before any other import
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _here]
import argparse, json, socket, statistics, subprocess, tempfile, textwrap, time, warnings
from pathlib import Path

warnings.filterwarnings('ignore')
os.environ.setdefault('DVC_NO_ANALYTICS', '1')

PEER = textwrap.dedent('''
    # The classic FastAPI tutorial endpoint: a pydantic body, a sync `def` route, one model call per request.
    import os, mlflow, numpy as np
    from fastapi import FastAPI
    from pydantic import BaseModel
    mlflow.set_tracking_uri(os.environ["PEER_TRACKING_URI"]); mlflow.set_registry_uri(os.environ["PEER_TRACKING_URI"])
    model = mlflow.pyfunc.load_model(os.environ["PEER_MODEL_URI"])
    DTYPE = os.environ["PEER_DTYPE"]
    app = FastAPI()
    class Item(BaseModel):
        x: list[float] | list[int]
    @app.post("/predict")
    def predict(item: Item):
        return {"prediction": model.predict(np.asarray([item.x], dtype=DTYPE)).tolist()[0]}
    @app.get("/ready")
    def ready(): return {"ok": True}
''')

# The transformer as a user would log it: a Hugging Face module behind a thin wrapper returning the logits tensor
# (what `mlflow.pytorch`'s pyfunc expects), in a module shipped with the model (`code_paths`).
TRANSFORMER = textwrap.dedent('''
    import torch
    class Logits(torch.nn.Module):
        "The logits of a Hugging Face sequence classifier, from token ids."
        def __init__(self, m): super().__init__(); self.m = m
        def forward(self, ids): return self.m(input_ids=ids, return_dict=False)[0]
''')

# The load generator, run as its own processes: each opens `conc` keep-alive connections that send `n` POSTs of one
# body in all, and prints its wall time and latencies. Responses are read with one `readuntil` for the head and one
# `readexactly` for the body, so the client costs little CPU per request.
LOADGEN = textwrap.dedent(r'''
    import asyncio, json, sys, time
    try: import uvloop; uvloop.install()
    except ImportError: pass
    host, port, path, body_file, n, conc = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
    body = open(body_file, 'rb').read()
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    lat, errs, left = [], [], [n]
    async def conn():
        r, w = await asyncio.open_connection(host, port)
        try:
            while left[0] > 0:
                left[0] -= 1
                t = time.perf_counter()
                w.write(head)
                h = await r.readuntil(b'\r\n\r\n')
                status = int(h[9:12])
                i = h.lower().find(b'content-length:')
                if i < 0: raise RuntimeError('a response without Content-Length')
                await r.readexactly(int(h[i + 15:h.index(b'\r\n', i)]))
                lat.append(time.perf_counter() - t)
                if status != 200: errs.append(status)
        finally: w.close()
    async def run():
        t0 = time.perf_counter()
        res = await asyncio.gather(*[conn() for _ in range(conc)], return_exceptions=True)
        return time.perf_counter() - t0, sum(isinstance(x, Exception) for x in res)
    dt, failed_conns = asyncio.run(run())
    print(json.dumps({'seconds': dt, 'lat': lat, 'errors': len(errs) + (n - len(lat)) + failed_conns}))
''')
LOAD_PROCS = 2  # load-generator processes per round (each with concurrency / LOAD_PROCS connections)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def make_models(prj):
    "The MLP and the transformer, logged with `mlflow.pytorch` and promoted to @champion; returns an example input of each."
    import mlflow, numpy as np, torch
    from mlflow.models import infer_signature
    from mlnb.serving.registry import register, promote
    mlflow.set_tracking_uri(prj.tracking_uri)
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024), torch.nn.ReLU(),
                              torch.nn.Linear(1024, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024), torch.nn.ReLU(),
                              torch.nn.Linear(1024, 10)).eval()
    x = np.random.default_rng(0).normal(size=(4, 256)).astype('float32')
    from transformers import BertConfig, BertForSequenceClassification
    code = prj.root/'bench_transformer.py'; code.write_text(TRANSFORMER)
    sys.path.insert(0, str(prj.root))
    from bench_transformer import Logits
    cfg = BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                     max_position_embeddings=128, num_labels=2)
    bert = Logits(BertForSequenceClassification(cfg)).eval()
    ids = np.random.default_rng(1).integers(1, 1000, size=(4, 64)).astype('int64')
    for name, model, example, extra in (('bench-mlp', mlp, x, {}), ('bench-transformer', bert, ids, {'code_paths': [str(code)]})):
        with torch.no_grad(): out = model(torch.from_numpy(example)).numpy()
        with mlflow.start_run():
            info = mlflow.pytorch.log_model(model, name='model', signature=infer_signature(example, out),
                                            pip_requirements=['torch'], serialization_format='pickle', **extra)
        register(info, name, project=prj); promote(name, 1, gate=False, project=prj)
    return {'mlp': (x[0].tolist(), 'float32'), 'transformer': (ids[0].tolist(), 'int64')}


def start(cmd, cwd, env, port):
    import httpx
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while True:
        if p.poll() is not None: raise RuntimeError(f"server exited: {p.stderr.read()[-2000:]}")
        try:
            if httpx.get(f'http://127.0.0.1:{port}/ready', timeout=2).status_code == 200: return p
        except httpx.TransportError: pass
        if time.time() - t0 > 300: p.kill(); raise RuntimeError('server did not start')
        time.sleep(0.2)


def stop(p):
    p.terminate()
    try: p.wait(30)
    except subprocess.TimeoutExpired: p.kill(); p.wait()


def load(port, body_file, n, concurrency, cwd, server=None) -> dict:
    "One round: `n` POSTs at `concurrency` from separate load-generator processes (and the server's CPU ms per request)."
    import psutil
    proc = psutil.Process(server.pid) if server is not None else None
    cpu0 = sum(proc.cpu_times()[:2]) if proc else 0
    k = max(1, min(LOAD_PROCS, concurrency))
    ps = [subprocess.Popen([sys.executable, '-c', LOADGEN, '127.0.0.1', str(port), '/predict', str(body_file),
                            str(n // k + (i < n % k)), str(concurrency // k + (i < concurrency % k))],
                           cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(k)]
    outs = []
    for p in ps:
        o, e = p.communicate(timeout=900)
        if p.returncode: raise RuntimeError(f"load generator failed: {e[-2000:]}")
        outs.append(json.loads(o.strip().splitlines()[-1]))
    lat = sorted(x for o in outs for x in o['lat'])
    out = {'rps': len(lat) / max(o['seconds'] for o in outs), 'p95_ms': lat[int(0.95 * (len(lat) - 1))] * 1000 if lat else None,
           'errors': sum(o['errors'] for o in outs)}
    if proc: out['cpu_ms'] = (sum(proc.cpu_times()[:2]) - cpu0) * 1000 / n
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--requests', type=int, default=2000, help='requests per round (the transformer case sends half)')
    ap.add_argument('--repeats', type=int, default=3, help='rounds per side (ABBA order)')
    ap.add_argument('--concurrency', type=int, default=32)
    ap.add_argument('--case', action='append', choices=['mlp', 'transformer'], help='run only this case (repeatable)')
    a = ap.parse_args()
    from mlnb.project import init
    prj = init(Path(tempfile.mkdtemp())/'bench')
    payloads = make_models(prj)
    env = {k: v for k, v in os.environ.items() if k != 'MLNB_PROJECT'}
    (prj.root/'peer_app.py').write_text(PEER)
    for case, (payload, dtype) in payloads.items():
        if a.case and case not in a.case: continue
        n = a.requests if case == 'mlp' else a.requests // 2
        name = f'bench-{case}'
        bodies = {'mlnb': prj.root/f'{case}-mlnb.json', 'peer': prj.root/f'{case}-peer.json'}
        bodies['mlnb'].write_text(json.dumps(payload)); bodies['peer'].write_text(json.dumps({'x': payload}))
        ports, procs = {'mlnb': free_port(), 'peer': free_port()}, {}
        try:
            procs['mlnb'] = start([sys.executable, '-c', 'import sys; from mlnb.cli import main; sys.exit(main())', 'serve',
                                   f'{name}@champion', '--host', '127.0.0.1', '--port', str(ports['mlnb']), '--workers', '1',
                                   '--poll-s', '0'], prj.root, env, ports['mlnb'])
            penv = {**env, 'PEER_TRACKING_URI': prj.tracking_uri, 'PEER_MODEL_URI': f'models:/{name}@champion', 'PEER_DTYPE': dtype}
            procs['peer'] = start([sys.executable, '-m', 'uvicorn', 'peer_app:app', '--host', '127.0.0.1', '--port', str(ports['peer']),
                                   '--workers', '1', '--log-level', 'warning', '--no-access-log'], prj.root, penv, ports['peer'])
            for side in ('mlnb', 'peer'): load(ports[side], bodies[side], min(300, n), a.concurrency, prj.root)  # warm up
            res = {'mlnb': [], 'peer': []}
            for r in range(a.repeats):
                for side in (('peer', 'mlnb') if r % 2 == 0 else ('mlnb', 'peer')):
                    res[side].append(load(ports[side], bodies[side], n, a.concurrency, prj.root, procs[side]))
        finally:
            for p in procs.values(): stop(p)
        med = lambda side, k: statistics.median(x[k] for x in res[side])
        ratio = statistics.median(m['rps'] / p['rps'] for m, p in zip(res['mlnb'], res['peer']))
        print(json.dumps({'bench': 'serve', 'case': f'{case} batched vs naive', 'mlnb': round(med('mlnb', 'rps'), 1),
                          'peer': round(med('peer', 'rps'), 1), 'unit': 'req/s', 'ratio': round(ratio, 2),
                          'mlnb_p95_ms': round(med('mlnb', 'p95_ms'), 2), 'peer_p95_ms': round(med('peer', 'p95_ms'), 2),
                          'errors': sum(x['errors'] for s in res for x in res[s]),
                          'mlnb_cpu_ms_per_req': round(med('mlnb', 'cpu_ms'), 3), 'peer_cpu_ms_per_req': round(med('peer', 'cpu_ms'), 3)}),
              flush=True)


if __name__ == '__main__':
    main()
