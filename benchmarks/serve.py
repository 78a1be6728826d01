"""Serving throughput: `mlnb serve` (micro-batching) against the classic FastAPI tutorial endpoint that calls the model
once per request, same model, one uvicorn process each, real HTTP load on loopback at concurrency 32.

Prints one JSON line per case:
{"bench": "serve", "case": ..., "mlnb": req_per_s, "peer": req_per_s, "unit": "req/s", "ratio": mlnb/peer,
 "mlnb_p95_ms": ..., "peer_p95_ms": ..., "errors": n}

Usage: python benchmarks/serve.py [--requests N] [--repeats R] [--concurrency C] [--case mlp|transformer]
mlnb's server runs with the project's settings (serve.max_batch, serve.max_wait_ms, serve.torch_threads, ...);
MLNB_SERVE_* environment variables change them.
"""
import os, sys
# run as `python benchmarks/serve.py`, this folder is sys.path[0]; a sibling benchmark named like a stdlib module
# (benchmarks/logging.py) would shadow it, so take the folder off the path before any other import
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _here]
import argparse, asyncio, json, os, socket, statistics, subprocess, sys, tempfile, textwrap, time, warnings
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


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def make_models(prj):
    "A small torch MLP and a small transformer (2-layer BERT from a config, traced), logged and promoted to @champion."
    import mlflow, numpy as np, torch
    from mlflow.models import infer_signature
    from mlnb.registry import register, promote
    mlflow.set_tracking_uri(prj.tracking_uri)
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(),
                              torch.nn.Linear(256, 10)).eval()
    x = np.random.default_rng(0).normal(size=(4, 64)).astype('float32')
    from transformers import BertConfig, BertForSequenceClassification
    cfg = BertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                     max_position_embeddings=128, num_labels=2, torchscript=True)
    bert = BertForSequenceClassification(cfg).eval()
    class Logits(torch.nn.Module):
        def __init__(self, m): super().__init__(); self.m = m
        def forward(self, ids): return self.m(ids)[0]
    ids = np.random.default_rng(1).integers(1, 1000, size=(4, 32)).astype('int64')
    with torch.no_grad(): traced = torch.jit.trace(Logits(bert), torch.from_numpy(ids))
    for name, model, example in (('bench-mlp', mlp, x), ('bench-transformer', traced, ids)):
        with torch.no_grad(): out = model(torch.from_numpy(example)).numpy()
        with mlflow.start_run():
            info = mlflow.pytorch.log_model(model, name='model', signature=infer_signature(example, out),
                                            pip_requirements=['torch'], serialization_format='pickle')
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
        if time.time() - t0 > 180: p.kill(); raise RuntimeError('server did not start')
        time.sleep(0.2)


def stop(p):
    p.terminate()
    try: p.wait(30)
    except subprocess.TimeoutExpired: p.kill(); p.wait()


async def _post_loop(host, port, path, body, it, lat, errs):
    "One keep-alive HTTP/1.1 connection sending POSTs while `it` yields (a minimal client: the load must not be the bottleneck)."
    r, w = await asyncio.open_connection(host, port)
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    try:
        for _ in it:
            t = time.perf_counter()
            w.write(head)
            status = int((await r.readline()).split()[1])
            length, chunked = 0, False
            while (line := await r.readline()) not in (b'\r\n', b''):
                k, _, v = line.decode().partition(':')
                if k.lower() == 'content-length': length = int(v)
                if k.lower() == 'transfer-encoding' and 'chunked' in v: chunked = True
            if chunked:
                while (size := int((await r.readline()).strip(), 16)): await r.readexactly(size + 2)
                await r.readline()
            else: await r.readexactly(length)
            lat.append(time.perf_counter() - t)
            if status != 200: errs.append(status)
    finally: w.close()


async def _load(url, payload, n, concurrency):
    "Send `n` POSTs over `concurrency` keep-alive connections; returns (req/s, p95 ms, errors)."
    from urllib.parse import urlparse
    u = urlparse(url)
    body, it, lat, errs = json.dumps(payload).encode(), iter(range(n)), [], []
    t0 = time.perf_counter()
    res = await asyncio.gather(*[_post_loop(u.hostname, u.port, u.path, body, it, lat, errs) for _ in range(concurrency)],
                               return_exceptions=True)
    dt = time.perf_counter() - t0
    errors = len(errs) + sum(isinstance(x, Exception) for x in res) + (n - len(lat) - len(errs) if len(lat) + len(errs) < n else 0)
    lat.sort()
    return len(lat) / dt, lat[int(0.95 * (len(lat) - 1))] * 1000, errors


def measure(url, payload, n, repeats, concurrency):
    asyncio.run(_load(url, payload, min(200, n), concurrency))  # warm up
    runs = [asyncio.run(_load(url, payload, n, concurrency)) for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs), sum(r[2] for r in runs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--requests', type=int, default=2000, help='requests per repeat (the transformer case sends half)')
    ap.add_argument('--repeats', type=int, default=3)
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
        port = free_port()
        p = start([sys.executable, '-c', 'import sys; from mlnb.cli import main; sys.exit(main())', 'serve', f'{name}@champion',
                   '--host', '127.0.0.1', '--port', str(port), '--workers', '1', '--poll-s', '0'], prj.root, env, port)
        try: m_rps, m_p95, m_err = measure(f'http://127.0.0.1:{port}/predict', payload, n, a.repeats, a.concurrency)
        finally: stop(p)
        port = free_port()
        penv = {**env, 'PEER_TRACKING_URI': prj.tracking_uri, 'PEER_MODEL_URI': f'models:/{name}@champion', 'PEER_DTYPE': dtype}
        p = start([sys.executable, '-m', 'uvicorn', 'peer_app:app', '--host', '127.0.0.1', '--port', str(port), '--workers', '1',
                   '--log-level', 'warning', '--no-access-log'], prj.root, penv, port)
        try: p_rps, p_p95, p_err = measure(f'http://127.0.0.1:{port}/predict', {'x': payload}, n, a.repeats, a.concurrency)
        finally: stop(p)
        print(json.dumps({'bench': 'serve', 'case': f'{case} batched vs naive', 'mlnb': round(m_rps, 1), 'peer': round(p_rps, 1),
                          'unit': 'req/s', 'ratio': round(m_rps / p_rps, 2), 'mlnb_p95_ms': round(m_p95, 2),
                          'peer_p95_ms': round(p_p95, 2), 'errors': m_err + p_err}), flush=True)


if __name__ == '__main__':
    main()
