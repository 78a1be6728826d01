"""The HTTP contract of `mlnb serve`, checked against a real server (uvicorn in a background thread) for the quickstart's
champion (a scaler + logistic regression pipeline on the 30 float columns of the breast-cancer data): every operation of
`openapi.json` declares its responses with schemas and media types, real responses validate against them, bad input is
a 422 naming the field in the one error shape, and nothing refused reaches the prediction log."""
import json, logging, warnings
import pytest

warnings.filterwarnings('ignore')
httpx = pytest.importorskip('httpx')
jsonschema = pytest.importorskip('jsonschema')

FRAGILE = '''
import mlflow
class Fragile(mlflow.pyfunc.PythonModel):
    "Doubles x; a ValueError on a negative x (the input is at fault), a RuntimeError on x == 13 (the model is)."
    def predict(self, context, model_input, params=None):
        if (model_input["x"] < 0).any(): raise ValueError("negative x")
        if (model_input["x"] == 13).any(): raise RuntimeError("unlucky")
        return (model_input["x"] * 2).tolist()
mlflow.models.set_model(Fragile())
'''
ERROR_KEYS = {'message', 'detail'}


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    import mlflow, numpy as np, pandas as pd
    from mlflow.models import infer_signature
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from mlnb.project import init
    from mlnb.serving.registry import register, promote
    from mlnb.serving.server import serve
    prj = init(tmp_path_factory.mktemp('contract')/'p')
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    m = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
    mlflow.set_tracking_uri(prj.tracking_uri)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(m, name='model', signature=infer_signature(X, m.predict(X)), pip_requirements=['scikit-learn'])
    register(info, 'cancer', project=prj); promote('cancer', 1, gate=False, project=prj)
    code = prj.root/'fragile_model.py'; code.write_text(FRAGILE)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name='model', python_model=str(code), pip_requirements=[],
                                       signature=infer_signature(pd.DataFrame({'x': [1.0]}), np.array([2.0])))
    register(info, 'fragile', project=prj); promote('fragile', 1, gate=False, project=prj)
    hs = dict(open=serve('cancer@champion', port=0, background=True, project=prj, poll_s=0),
              keyed=serve('cancer@champion', port=0, background=True, project=prj, poll_s=0, api_key='s3cret', log_predictions=False),
              fragile=serve('fragile@champion', port=0, background=True, project=prj, poll_s=0))
    yield dict(prj=prj, X=X, y=y, m=m, **hs)
    for h in hs.values(): h.stop()


def logged(h) -> int:
    "Rows in the server's prediction log (flushed first)."
    log = h.model_server.log
    log.flush()
    return len(log.path.read_text().splitlines()) if log.path.exists() else 0


def check(spec, path, method, r):
    "Validate response `r` against what `spec` declares for `method path` and its status; returns the body (JSON or text)."
    op = spec['paths'][path][method]
    resp = op['responses'].get(str(r.status_code))
    assert resp is not None, f"{method.upper()} {path} answered {r.status_code}, which it does not declare ({list(op['responses'])})"
    ct = r.headers['content-type'].split(';')[0]
    assert ct in resp['content'], (path, r.status_code, ct, list(resp['content']))
    schema = resp['content'][ct]['schema']
    body = r.json() if ct == 'application/json' else r.text
    jsonschema.validate(body, {**schema, 'components': spec['components']})
    return body


def error_schema_ok(spec, r):
    "An error answer in the one error shape, valid against the spec's error schema."
    body = r.json()
    assert ERROR_KEYS <= set(body) <= ERROR_KEYS | {'error_id'}, body
    assert isinstance(body['message'], str) and body['message']
    jsonschema.validate(body, {**spec['components']['schemas']['ErrorBody'], 'components': spec['components']})
    return body


def test_openapi_declares_every_response(env):
    spec = httpx.get(f"{env['open'].url}/openapi.json").json()
    ops = {(p, m): op for p, d in spec['paths'].items() for m, op in d.items()}
    assert {('/predict', 'post'), ('/feedback', 'post'), ('/health', 'get'), ('/ready', 'get'), ('/model', 'get'),
            ('/reload', 'post'), ('/metrics', 'get')} <= set(ops)
    for (p, m), op in ops.items():
        rs = op['responses']
        assert '200' in rs, (p, rs)
        for status, resp in rs.items():
            assert resp.get('description'), (p, status)
            assert resp.get('content'), (p, status, resp)
            for media, c in resp['content'].items():
                assert c.get('schema'), (p, status, media)  # not the empty schema
            if int(status) >= 400 and not (p == '/ready' and status == '503'):
                assert list(resp['content']) == ['application/json'], (p, status)
                assert resp['content']['application/json']['schema'] == {'$ref': '#/components/schemas/ErrorBody'}, (p, status)
        assert '401' not in rs and '403' not in rs and 'security' not in op  # no API key on this server
        assert '500' in rs, (p, sorted(rs))
    assert set(spec['paths']['/metrics']['get']['responses']['200']['content']) == {'text/plain'}
    for p in ('/predict', '/feedback'):
        assert {'200', '413', '422', '500'} <= set(ops[p, 'post']['responses']), (p, sorted(ops[p, 'post']['responses']))
    assert '503' in ops['/predict', 'post']['responses'] and '503' in ops['/ready', 'get']['responses']
    assert {'200', '404', '500'} == set(ops['/decisions/{ticket}', 'get']['responses'])  # human review's answers (issue 22)
    r = httpx.get(f"{env['open'].url}/decisions/{'0' * 32}")
    assert r.status_code == 404 and set(r.json()) == ERROR_KEYS and 'no review case' in r.json()['message']
    body = spec['paths']['/predict']['post']['requestBody']['content']['application/json']['schema']
    assert 'mean radius' in json.dumps(body)
    for op in ops.values():
        assert op['responses']['200']['content'] != {'application/json': {'schema': {}}}
    # the 200 of /predict says what a prediction is: the model's output signature (an integer class here)
    assert 'integer' in json.dumps(spec['components']['schemas']), spec['components']['schemas'].keys()
    # with an API key: declared, with 401 and 403, on all but /health and /ready
    kspec = httpx.get(f"{env['keyed'].url}/openapi.json", headers={'X-API-Key': 's3cret'}).json()
    assert kspec['components']['securitySchemes'] == {'APIKeyHeader': {'type': 'apiKey', 'in': 'header', 'name': 'X-API-Key'}}
    for p, d in kspec['paths'].items():
        for m, op in d.items():
            if p in ('/health', '/ready'): assert '401' not in op['responses'] and 'security' not in op
            else: assert {'401', '403'} <= set(op['responses']) and op['security'] == [{'APIKeyHeader': []}], (p, op)


def test_happy_path_validates_against_the_spec(env):
    h, X, y = env['open'], env['X'], env['y']
    with httpx.Client(base_url=h.url) as c:
        spec = c.get('/openapi.json').json()
        one = check(spec, '/predict', 'post', c.post('/predict', json=X.iloc[0].to_dict()))
        assert one['prediction'] == int(env['m'].predict(X.iloc[:1])[0])
        many = check(spec, '/predict', 'post', c.post('/predict', json=X.iloc[:5].to_dict('records')))
        assert many['predictions'] == env['m'].predict(X.iloc[:5]).tolist()
        env_ = check(spec, '/predict', 'post', c.post('/predict', json={'instances': X.iloc[:3].to_dict('records')}))
        assert env_['predictions'] == many['predictions'][:3]
        ints = X.iloc[0].to_dict() | {'mean radius': 14}  # an integer for a float feature is a number
        assert c.post('/predict', json=ints).status_code == 200
        assert check(spec, '/feedback', 'post', c.post('/feedback', json={'id': one['id'], 'label': int(y.iloc[0])})) == {'accepted': 1}
        assert check(spec, '/feedback', 'post', c.post('/feedback', json=[{'id': i, 'label': 0} for i in many['ids']])) == {'accepted': 5}
        assert check(spec, '/feedback', 'post', c.post('/feedback', json=[])) == {'accepted': 0}  # the schema allows it
        assert check(spec, '/health', 'get', c.get('/health')) == {'status': 'ok'}
        assert check(spec, '/ready', 'get', c.get('/ready'))['ready'] is True
        assert check(spec, '/model', 'get', c.get('/model'))['version'] == 1
        assert check(spec, '/reload', 'post', c.post('/reload'))['swapped'] is False
        r = c.get('/metrics')
        assert r.headers['content-type'].startswith('text/plain')
        assert 'mlnb_requests_total' in check(spec, '/metrics', 'get', r)


def test_bad_inputs_are_422_in_one_shape_and_not_logged(env):
    h, X = env['open'], env['X']
    one = X.iloc[0].to_dict()
    raw = lambda s: dict(content=s.encode(), headers={'content-type': 'application/json'})
    body = json.dumps(one)
    cases = [  # (request, status, words the message must hold)
        (dict(json={**one, 'mean radius': True}), 422, ['mean radius', 'number']),
        (dict(json={**one, 'mean radius': '12.5'}), 422, ['mean radius', 'number']),
        (dict(json={**one, 'mean radius': None}), 422, ['mean radius']),
        (raw(body.replace(f'"mean radius": {one["mean radius"]}', '"mean radius": NaN')), 422, ['mean radius', 'finite']),
        (raw(body.replace(f'"mean radius": {one["mean radius"]}', '"mean radius": Infinity')), 422, ['mean radius', 'finite']),
        (raw(body.replace(f'"mean radius": {one["mean radius"]}', '"mean radius": 1e999')), 422, ['mean radius', 'finite']),
        (raw(body.replace(f'"mean radius": {one["mean radius"]}', '"mean radius": ' + '9' * 400)), 422, ['mean radius']),
        (dict(json={**one, 'mean smoothness': 1.7976931348623157e+308}), 422, ['mean smoothness']),
        (dict(json=[one, {**one, 'worst area': 'big'}]), 422, ['instance 1', 'worst area']),
        (dict(json={k: v for k, v in one.items() if k != 'worst area'}), 422, ['worst area', 'required']),
        (dict(json={**one, 'colour': 'red'}), 422, ['colour']),
        (dict(json=[]), 422, ['empty']),
        (dict(json={'instances': []}), 422, ['empty']),
        (dict(json='hello'), 422, ['invalid input']),
        (raw('{"mean radius": 1,'), 422, ['not valid JSON']),
        (raw('x' * (1024 * 1024 + 10)), 413, ['over the limit']),
    ]
    with httpx.Client(base_url=h.url) as c:
        spec = c.get('/openapi.json').json()
        n0 = logged(h)
        for kw, status, words in cases:
            r = c.post('/predict', **kw)
            assert r.status_code == status, (kw.get('json', kw.get('content', b'')[:80]), r.status_code, r.text[:300])
            b = error_schema_ok(spec, r)
            check(spec, '/predict', 'post', r)
            for w in words: assert w in b['message'], (w, b['message'])
            assert '\n' not in b['message']
        fb_nan = raw('{"id": "%s", "label": NaN}' % ('a' * 32))
        for kw in (dict(json={'id': 'x' * 32, 'label': 1}), dict(json={'label': 1}), raw('{'), dict(json=[{'id': 'a' * 32}]),
                   dict(json={'id': 'a' * 32, 'label': None}), fb_nan):
            r = c.post('/feedback', **kw)
            assert r.status_code == 422, r.text
            error_schema_ok(spec, r); check(spec, '/feedback', 'post', r)
        assert logged(h) == n0  # nothing refused is served traffic
        assert c.post('/predict', json=one).status_code == 200 and logged(h) == n0 + 1


def test_starlette_errors_have_the_same_shape(env):
    with httpx.Client(base_url=env['open'].url) as c:
        spec = c.get('/openapi.json').json()
        r = c.get('/nope')
        assert r.status_code == 404 and '/nope' in error_schema_ok(spec, r)['message']
        r = c.get('/predict')
        assert r.status_code == 405 and 'POST' in error_schema_ok(spec, r)['message'] and r.headers['allow'] == 'POST'
        r = c.delete('/model')
        assert r.status_code == 405 and 'GET' in error_schema_ok(spec, r)['message']


def test_a_model_that_raises_is_never_a_500(env, caplog):
    h = env['fragile']
    with httpx.Client(base_url=h.url) as c, caplog.at_level(logging.WARNING, logger='mlnb.serving.server'):
        spec = c.get('/openapi.json').json()
        n0 = logged(h)
        r = c.post('/predict', json={'x': -1.0})  # the input is at fault
        assert r.status_code == 422, r.text
        b = error_schema_ok(spec, r); check(spec, '/predict', 'post', r)
        assert 'negative x' in b['message'] and len(b['error_id']) == 12
        r = c.post('/predict', json={'x': 13.0})  # the model is
        assert r.status_code == 503, r.text
        b2 = error_schema_ok(spec, r); check(spec, '/predict', 'post', r)
        assert 'unlucky' in b2['message'] and b2['error_id'] in b2['message']
        assert c.post('/predict', json={'x': 2.0}).json()['prediction'] == 4.0
        assert logged(h) == n0 + 1
    text = caplog.text
    assert b['error_id'] in text and b2['error_id'] in text


def test_api_key_401_and_403(env):
    h, X = env['keyed'], env['X']
    one = X.iloc[0].to_dict()
    with httpx.Client(base_url=h.url) as c:
        spec = c.get('/openapi.json', headers={'X-API-Key': 's3cret'}).json()
        assert c.get('/health').status_code == 200
        r = c.post('/predict', json=one)
        assert r.status_code == 401 and 'X-API-Key' in error_schema_ok(spec, r)['message']
        check(spec, '/predict', 'post', r)
        r = c.post('/predict', json=one, headers={'X-API-Key': 'wrong'})
        assert r.status_code == 403 and 'X-API-Key' in error_schema_ok(spec, r)['message']
        check(spec, '/predict', 'post', r)
        r = c.get('/metrics', headers={'X-API-Key': 'wrong'})
        assert r.status_code == 403 and r.headers['content-type'] == 'application/json'
        check(spec, '/metrics', 'get', r)
        assert c.post('/predict', json=one, headers={'X-API-Key': 's3cret'}).status_code == 200
