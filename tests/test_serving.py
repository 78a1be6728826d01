"""`mlnb serve` as a real uvicorn process on 127.0.0.1: predictions equal the model's own, batching under bounded
load, hot swap under load with zero failed requests, fallback when a version does not load, bad input, a model that
raises, the API key, several workers, and the prediction log."""
import json, re, subprocess, sys, threading, time, warnings
import pytest
from conftest import free_port, serve_env as _env, serve_process as server

warnings.filterwarnings('ignore')
httpx = pytest.importorskip('httpx')
CLI = [sys.executable, '-c', 'import sys; from mlnb.cli import main; sys.exit(main())']

FRAGILE = '''
import mlflow
class Fragile(mlflow.pyfunc.PythonModel):
    "Doubles x; raises on a negative x (a model bug the server must survive)."
    def predict(self, context, model_input, params=None):
        if (model_input["x"] < 0).any(): raise ValueError("negative x")
        return (model_input["x"] * 2).tolist()
mlflow.models.set_model(Fragile())
'''


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    "A project with `cancer` v1 (logistic regression, champion) and v2 (naive Bayes), `fragile` v1, `mlp` v1 (torch)."
    import mlflow, numpy as np, pandas as pd, torch
    from mlflow.models import infer_signature
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from mlnb.project import init
    from mlnb.serving.registry import register, promote
    prj = init(tmp_path_factory.mktemp('serve')/'p')
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X = X.iloc[:, :4]; X.columns = ['radius', 'texture', 'perimeter', 'area']
    mlflow.set_tracking_uri(prj.tracking_uri)
    models = [make_pipeline(StandardScaler(), LogisticRegression()), GaussianNB()]
    for m in models:
        with mlflow.start_run():
            m.fit(X, y)
            register(mlflow.sklearn.log_model(m, name='model', signature=infer_signature(X, m.predict(X)),
                                              pip_requirements=['scikit-learn']), 'cancer', project=prj)
    promote('cancer', 1, gate=False, project=prj)
    code = prj.root/'fragile_model.py'; code.write_text(FRAGILE)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name='model', python_model=str(code), pip_requirements=[],
                                       signature=infer_signature(pd.DataFrame({'x': [1.0]}), np.array([2.0])))
    register(info, 'fragile', project=prj); promote('fragile', 1, gate=False, project=prj)
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
    xs = np.random.default_rng(0).normal(size=(20, 8)).astype('float32')
    with torch.no_grad(): ys = mlp(torch.from_numpy(xs)).numpy()
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(mlp, name='model', signature=infer_signature(xs, ys), pip_requirements=['torch'],
                                        serialization_format='pickle')  # pt2 would fix the batch size at export
    register(info, 'mlp', project=prj); promote('mlp', 1, gate=False, project=prj)
    return dict(prj=prj, X=X, models=models, mlp_x=xs, mlp_y=ys)


def test_predictions_equal_the_model(env):
    prj, X, m1 = env['prj'], env['X'], env['models'][0]
    want = m1.predict(X.iloc[:40]).tolist()
    with server(prj, 'cancer@champion', '--poll-s', '0') as url, httpx.Client(base_url=url) as c:
        got = [c.post('/predict', json=X.iloc[i].to_dict()).json() for i in range(10)]
        assert [g['prediction'] for g in got] == want[:10] and {g['version'] for g in got} == {1}
        r = c.post('/predict', json=X.iloc[:40].to_dict('records')).json()
        assert r['predictions'] == want and len(r['ids']) == 40 and r['model'] == 'cancer'
        info = c.get('/model').json()
        assert (info['name'], info['alias'], info['version'], info['input_kind']) == ('cancer', 'champion', 1, 'columns')
        assert c.get('/health').json() == {'status': 'ok'}
        spec = c.get('/openapi.json').json()
        assert 'radius' in json.dumps(spec['paths']['/predict']['post']['requestBody'])
        assert c.get('/docs').status_code == 200
        m = c.get('/metrics').text
        assert 'mlnb_model_version{alias="champion",model="cancer"} 1.0' in m
        assert re.search(r'mlnb_requests_total\{path="/predict",status="200"\} 11\.0', m), m


def test_tensor_model(env):
    import numpy as np
    xs, ys = env['mlp_x'], env['mlp_y']
    with server(env['prj'], 'mlp', '--poll-s', '0') as url, httpx.Client(base_url=url) as c:
        one = c.post('/predict', json=xs[0].tolist()).json()
        np.testing.assert_allclose(one['prediction'], ys[0], rtol=1e-5, atol=1e-6)
        many = c.post('/predict', json=xs.tolist()).json()
        np.testing.assert_allclose(many['predictions'], ys, rtol=1e-5, atol=1e-6)
        r = c.post('/predict', json=xs[0].tolist()[:5] + ['a', 'b', 'c'])
        assert r.status_code == 422 and '5: Input should be a valid number' in r.json()['message']


def load(url, clients, per_client, payload_fn, stop=None):
    "Bounded load: `clients` threads each sending up to `per_client` requests (or until `stop` is set); returns (status, version) pairs."
    out, lock = [], threading.Lock()
    def worker(w):
        with httpx.Client(base_url=url, timeout=30) as c:
            for i in range(per_client):
                if stop is not None and stop.is_set(): break
                try:
                    r = c.post('/predict', json=payload_fn(w, i))
                    res = (r.status_code, r.json().get('version') if r.status_code == 200 else r.text)
                except httpx.HTTPError as e: res = (0, repr(e))
                with lock: out.append(res)
    ts = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    for t in ts: t.start()
    return ts, out


def metric(text, name):
    m = re.search(rf'^{re.escape(name)} ([0-9.e+]+)$', text, re.M)
    return float(m.group(1)) if m else None


def test_batching_under_load(env):
    X = env['X']
    with server(env['prj'], 'cancer@champion', '--poll-s', '0', '--max-wait-ms', '10', '--cache-size', '0') as url:
        ts, out = load(url, 16, 25, lambda w, i: X.iloc[(w * 25 + i) % len(X)].to_dict())
        for t in ts: t.join()
        assert len(out) == 400 and all(s == 200 for s, _ in out), [o for o in out if o[0] != 200][:3]
        m = httpx.get(f'{url}/metrics').text
        assert metric(m, 'mlnb_batch_size_sum') == 400
        assert metric(m, 'mlnb_batch_size_count') < 400  # requests were merged into fewer model calls


def test_cache(env):
    X = env['X']
    with server(env['prj'], 'cancer@champion', '--poll-s', '0', '--cache-size', '100') as url, httpx.Client(base_url=url) as c:
        a = [c.post('/predict', json=X.iloc[0].to_dict()).json()['prediction'] for _ in range(5)]
        assert len(set(a)) == 1
        assert metric(c.get('/metrics').text, 'mlnb_cache_hits_total') == 4


def test_hot_swap_under_load_has_no_failures(env):
    from mlnb.serving.registry import promote, registry_client
    prj, X = env['prj'], env['X']
    with server(prj, 'cancer@champion', '--poll-s', '0.2') as url:
        stop = threading.Event()
        ts, out = load(url, 8, 100000, lambda w, i: X.iloc[(w + i) % len(X)].to_dict(), stop=stop)
        try:
            time.sleep(1.0)
            promote('cancer', 2, gate=False, project=prj)            # picked up by polling
            t0 = time.time()
            while not any(v == 2 for _, v in list(out)):
                assert time.time() - t0 < 30, 'the alias move was not picked up'
                time.sleep(0.05)
            promote('cancer', 1, gate=False, project=prj)            # and back, through POST /reload
            r = httpx.post(f'{url}/reload').json()
            assert r['version'] == 1
            time.sleep(0.5)
        finally:
            stop.set()
            for t in ts: t.join()
        bad = [o for o in out if o[0] != 200]
        assert not bad, bad[:5]
        versions = [v for _, v in out]
        assert len(out) > 100 and versions[-1] == 1 and 2 in versions
        m = httpx.get(f'{url}/metrics').text
        assert metric(m, 'mlnb_model_swaps_total') == 2


def test_fallback_when_new_version_does_not_load(env):
    from mlnb.serving.registry import promote, rollback, registry_client
    prj, X = env['prj'], env['X']
    with server(prj, 'cancer@champion', '--poll-s', '0') as url, httpx.Client(base_url=url) as c:
        mv = registry_client(prj).create_model_version('cancer', str(prj.root/'no-such-model'))
        promote('cancer', int(mv.version), gate=False, project=prj)
        try:
            r = c.post('/reload').json()
            assert r['swapped'] is False and r['version'] == 1 and 'not swapped in' in r['error']
            assert c.post('/predict', json=X.iloc[0].to_dict()).json()['version'] == 1
            assert 'still serving 1' in c.get('/model').json()['last_error']
            assert metric(c.get('/metrics').text, 'mlnb_errors_total{kind="load"}') == 1
        finally:
            rollback('cancer', project=prj)


def test_bad_inputs(env):
    X = env['X']
    one = X.iloc[0].to_dict()
    with server(env['prj'], 'cancer@champion', '--poll-s', '0') as url, httpx.Client(base_url=url) as c:
        cases = [
            (dict(content=b'{"radius": 1,', headers={'content-type': 'application/json'}), 422, 'not valid JSON'),
            (dict(json={**one, 'radius': 'big'}), 422, 'radius: Input should be a valid number'),
            (dict(json={k: v for k, v in one.items() if k != 'area'}), 422, 'area: Field required'),
            (dict(json={**one, 'colour': 'red'}), 422, 'colour: Extra inputs are not permitted'),
            (dict(json=[one, {**one, 'texture': None}]), 422, 'instance 1: texture'),
            (dict(json=[]), 422, 'empty list'),
            (dict(json='hello'), 422, 'invalid input'),
            (dict(content=b'x' * (1024 * 1024 + 10), headers={'content-type': 'application/json'}), 413, 'over the limit'),
        ]
        for kw, status, msg in cases:
            r = c.post('/predict', **kw)
            assert r.status_code == status and msg in r.json()['message'], (kw.get('json'), r.status_code, r.text)
        assert c.get('/predict').status_code == 405
        assert c.get('/nope').status_code == 404
        assert c.post('/predict', json=one).status_code == 200  # still serving
        assert metric(c.get('/metrics').text, 'mlnb_errors_total{kind="invalid"}') == 7


def test_model_that_raises(env):
    with server(env['prj'], 'fragile@champion', '--poll-s', '0', '--max-wait-ms', '20') as url, httpx.Client(base_url=url) as c:
        r = c.post('/predict', json={'x': -1.0})  # the model refused the input: the client's to fix, never a 500
        assert r.status_code == 422 and 'negative x' in r.json()['message'] and len(r.json()['error_id']) == 12
        assert c.post('/predict', json={'x': 2.0}).json()['prediction'] == 4.0
        # concurrent requests batched with a failing one: only that one fails
        ts, out = load(url, 6, 5, lambda w, i: {'x': -1.0 if w == 0 else float(w)})
        for t in ts: t.join()
        assert sorted(s for s, _ in out) == [200] * 25 + [422] * 5


def test_prediction_log_rows_equal_successes(env):
    prj = env['prj']
    from mlnb.track.predictions import served_log, served_path
    served_path(prj, 'fragile').unlink(missing_ok=True)
    ok = 0
    with server(prj, 'fragile@champion', '--poll-s', '0') as url, httpx.Client(base_url=url) as c:
        for i in range(12):
            r = c.post('/predict', json={'x': float(i - 3)})
            ok += r.status_code == 200
        r = c.post('/predict', json=[{'x': 1.0}, {'x': 2.0}]); ok += 2 * (r.status_code == 200)
        ids = r.json()['ids']
    df = served_log('fragile', project=prj)
    assert ok == 11 and len(df) == ok
    assert (df.prediction == df.x * 2).all() and set(df.version) == {1}
    assert df.id.tolist()[-2:] == ids and (df.latency_ms > 0).all()


def test_feedback_and_live_accuracy(env):
    "Labels sent to POST /feedback join the logged predictions; the live accuracy is that of the labelled ones."
    from mlnb.track.predictions import served_log, served_performance
    prj, X, m1 = env['prj'], env['X'], env['models'][0]
    from sklearn.datasets import load_breast_cancer
    y = load_breast_cancer(as_frame=True).target
    rows = list(range(100, 160))
    with server(prj, 'cancer/1', '--poll-s', '0') as url, httpx.Client(base_url=url) as c:
        ids = [c.post('/predict', json=X.iloc[i].to_dict()).json()['id'] for i in rows]
        labelled = rows[:40]
        r = c.post('/feedback', json=[{'id': i, 'label': int(y.iloc[k])} for i, k in zip(ids, labelled)])
        assert r.json() == {'accepted': 40}
        r = c.post('/feedback', json={'id': 'x' * 32, 'label': 1})
        assert r.status_code == 422 and 'id' in r.json()['message']
        assert c.post('/feedback', json={'label': 1}).status_code == 422
    df = served_log('cancer', project=prj)
    mine = df[df.id.isin(ids)]
    assert len(mine) == 60 and mine.label.notna().sum() == 40
    perf = served_performance('cancer', project=prj).set_index('version')
    want = float((m1.predict(X.iloc[labelled]) == y.iloc[labelled]).mean())
    assert perf.loc[1, 'labelled'] == 40 and perf.loc[1, 'accuracy'] == pytest.approx(want)


def test_api_key(env):
    X = env['X']
    with server(env['prj'], 'cancer@champion', '--poll-s', '0', '--api-key', 's3cret') as url:
        assert httpx.get(f'{url}/health').status_code == 200
        r = httpx.post(f'{url}/predict', json=X.iloc[0].to_dict())
        assert r.status_code == 401 and 'X-API-Key' in r.json()['message']
        assert httpx.post(f'{url}/predict', json=X.iloc[0].to_dict(), headers={'X-API-Key': 's3cret'}).status_code == 200


def test_workers(env):
    X = env['X']
    with server(env['prj'], 'cancer@champion', '--poll-s', '0', '--workers', '2') as url:
        ts, out = load(url, 4, 10, lambda w, i: X.iloc[i].to_dict())
        for t in ts: t.join()
        assert [s for s, _ in out] == [200] * 40


def test_cli_errors(env):
    prj = env['prj']
    def run(*args):
        return subprocess.run([*CLI, 'serve', *args], cwd=prj.root, env=_env(), capture_output=True, text=True, timeout=120)
    r = run('nope@champion', '--port', str(free_port()))
    assert r.returncode == 1 and "no registered model 'nope'" in r.stderr
    r = run('cancer@staging', '--port', str(free_port()))
    assert r.returncode == 1 and 'has no alias @staging' in r.stderr
    r = run('cancer', '--host', '0.0.0.0')
    assert r.returncode == 2 and 'without an API key' in r.stderr
    r = run('cancer@@x')
    assert r.returncode == 2 and 'bad model target' in r.stderr
    r = run('cancer', '--workers', '0')
    assert r.returncode == 2 and 'at least 1' in r.stderr


def test_notebook_magic_background_server(env, monkeypatch):
    "`%mlnb serve` starts a server in the background of the kernel and `%mlnb serve stop` stops it."
    from IPython.core.interactiveshell import InteractiveShell
    monkeypatch.chdir(env['prj'].root)
    shell = InteractiveShell.instance()
    shell.run_line_magic('load_ext', 'mlnb')
    try:
        h = shell.run_line_magic('mlnb', 'serve cancer@champion --port 0 --poll-s 0')
        assert h.running and h.url.startswith('http://127.0.0.1:')
        assert httpx.post(f'{h.url}/predict', json=env['X'].iloc[0].to_dict()).status_code == 200
        assert h.status()['requests'] == 1
        assert shell.run_line_magic('mlnb', 'serve stop') == f'stopped {h.url}'
        assert not h.running
    finally:
        shell.run_line_magic('unload_ext', 'mlnb')


def test_traffic_split_and_shadow(env):
    "Champion and challenger in one real server: a split answers a fraction from the challenger; shadow logs the challenger's outputs under the same ids."
    from mlnb.track.predictions import served_log, performance
    from mlnb.serving.registry import promote
    from sklearn.datasets import load_breast_cancer
    prj, X, (m1, m2) = env['prj'], env['X'], env['models']
    y = load_breast_cancer(as_frame=True).target
    from mlnb.serving.registry import RegistryError
    for v, alias in ((1, 'champion'), (2, 'challenger')):
        try: promote('cancer', v, alias=alias, gate=False, project=prj)
        except RegistryError as e: assert 'already holds' in e.message
    with server(prj, 'cancer@champion', '--poll-s', '0', '--challenger', 'challenger', '--split', '0.3') as url, httpx.Client(base_url=url) as c:
        got = [c.post('/predict', json=X.iloc[i].to_dict()).json() for i in range(100)]
        by = {v: [g for g in got if g['version'] == v] for v in (1, 2)}
        assert 10 <= len(by[2]) <= 50 and len(by[1]) + len(by[2]) == 100
        for i, g in enumerate(got):  # each answer is the answering version's own prediction
            assert g['prediction'] == (m1 if g['version'] == 1 else m2).predict(X.iloc[i:i + 1])[0]
        m = c.get('/metrics').text
        assert metric(m, 'mlnb_predictions_total{mode="answer",version="2"}') == len(by[2])
        assert metric(m, 'mlnb_predictions_total{mode="answer",version="1"}') == len(by[1])
        assert 'mlnb_model_version{alias="challenger",model="cancer"} 2.0' in m
        assert c.get('/model').json()['challenger'] == {'alias': 'challenger', 'version': 2, 'split': 0.3, 'shadow': False}
    rows = list(range(300, 360))
    with server(prj, 'cancer@champion', '--poll-s', '0', '--challenger', '2', '--shadow') as url, httpx.Client(base_url=url) as c:
        r = c.post('/predict', json=X.iloc[rows].to_dict('records')).json()
        assert r['version'] == 1 and r['predictions'] == m1.predict(X.iloc[rows]).tolist()  # the client sees the champion only
        one = [c.post('/predict', json=X.iloc[i].to_dict()).json() for i in rows[:10]]
        assert {o['version'] for o in one} == {1}
        ids = r['ids'] + [o['id'] for o in one]
        assert c.post('/feedback', json=[{'id': i, 'label': int(y.iloc[k])} for i, k in zip(r['ids'], rows)]).json() == {'accepted': 60}
        t0 = time.time()
        while metric(c.get('/metrics').text, 'mlnb_predictions_total{mode="shadow",version="2"}') != 70:
            assert time.time() - t0 < 30, c.get('/metrics').text
            time.sleep(0.1)
    log = served_log('cancer', project=prj, shadow=True)
    sh = log[log.shadow & log.id.isin(ids)].set_index('id').loc[ids]
    assert set(sh.version) == {2} and sh.prediction.tolist()[:60] == m2.predict(X.iloc[rows]).tolist()
    assert not served_log('cancer', project=prj).id.duplicated().any()  # the shadow rows stay out of the served data
    perf = performance('served:cancer', project=prj)
    perf = perf[perf.model == 'cancer'].set_index('version')
    # the challenger's live accuracy is that of its shadow predictions on the labelled requests
    assert perf.loc[2, 'labelled'] == 60
    assert perf.loc[2, 'accuracy'] == pytest.approx(float((m2.predict(X.iloc[rows]) == y.iloc[rows]).mean()))
    r = subprocess.run([*CLI, 'serve', 'cancer', '--split', '0.2', '--port', str(free_port())], cwd=prj.root, env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and 'need a challenger' in r.stderr


def test_quantize_int8(env):
    "`mlnb serve --quantize int8` serves the torch model with dynamically quantized Linear layers: close to fp32, and says so."
    import numpy as np
    pytest.importorskip('mlnb.serving.scoring')
    xs, ys = env['mlp_x'], env['mlp_y']
    with server(env['prj'], 'mlp', '--poll-s', '0', '--quantize', 'int8') as url, httpx.Client(base_url=url) as c:
        assert c.get('/model').json()['quantize'] == 'int8'
        got = np.asarray(c.post('/predict', json=xs.tolist()).json()['predictions'])
        assert got.shape == ys.shape and np.abs(got - ys).max() < 0.05 * np.abs(ys).max() + 0.02
    r = subprocess.run([*CLI, 'serve', 'cancer', '--quantize', 'int8', '--port', str(free_port())], cwd=env['prj'].root,
                       env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and 'needs a torch model' in r.stderr   # a scikit-learn model cannot be quantized: a clear error
