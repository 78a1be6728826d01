"""A Hugging Face text classifier end to end: a tiny BERT built from a config with a tokenizer trained here (nothing from
a hub) is trained by `mlnb.train`, registered, served over REST (single texts, lists, `{"instances": [...]}`), and
scored from a CSV by `mlnb predict`; bad input is a 422 that names the field, in mlnb's error shape."""
import json, warnings
from pathlib import Path
import pytest

warnings.filterwarnings('ignore')
httpx = pytest.importorskip('httpx')
pytest.importorskip('transformers'); pytest.importorskip('tokenizers')
try: import jsonschema
except ImportError: jsonschema = None


@pytest.fixture(scope='module')
def env(tmp_path_factory, tiny_bert):
    import pandas as pd
    from mlnb.project import init
    from mlnb.serving.registry import register, promote
    from mlnb.training.loop import train
    tmp = tmp_path_factory.mktemp('text')
    prj = init(tmp/'p')
    texts, labels = tiny_bert(tmp/'bert', n=24, hidden=16)
    r = train(str(tmp/'bert'), pd.DataFrame(dict(text=texts, label=labels)), epochs=1, batch_size=8, project=prj)
    assert r.model_uri
    register(r.model_uri, 'sentiment', project=prj); promote('sentiment', 1, gate=False, project=prj)
    return dict(prj=prj, texts=texts, tmp=tmp)


def test_text_model_over_rest(env):
    from mlnb.serving.server import serve
    prj, texts = env['prj'], env['texts']
    h = serve('sentiment@champion', port=0, background=True, project=prj, poll_s=0)
    try:
        with httpx.Client(base_url=h.url) as c:
            one = c.post('/predict', json={'text': texts[0]})
            assert one.status_code == 200, one.text
            p = one.json()['prediction']
            assert p['label'] in ('LABEL_0', 'LABEL_1') and 0 <= p['score'] <= 1
            assert c.post('/predict', json=texts[0]).json()['prediction'] == p  # a bare string is one text too
            many = c.post('/predict', json={'instances': [{'text': t} for t in texts[:4]]})
            assert many.status_code == 200, many.text
            preds = many.json()['predictions']
            assert len(preds) == 4 and preds[0] == p and all(set(q) == {'label', 'score'} for q in preds)
            assert c.post('/predict', json={'instances': texts[:4]}).json()['predictions'] == preds
            assert c.post('/predict', json=texts[:4]).json()['predictions'] == preds
            spec = c.get('/openapi.json').json()
            assert '"text"' in json.dumps(spec['paths']['/predict']['post']['requestBody'])
            if jsonschema is not None:  # the answers are what the spec declares (a prediction: {label, score})
                schema = spec['paths']['/predict']['post']['responses']['200']['content']['application/json']['schema']
                for r in (one, many): jsonschema.validate(r.json(), {**schema, 'components': spec['components']})
                assert 'score' in json.dumps(spec['components']['schemas'])
            log = h.model_server.log; log.flush(); n0 = len(log.path.read_text().splitlines())
            for kw, words in [(dict(json={'text': 5}), ['text', 'string']),
                              (dict(json=[{'text': 'fine'}, {'text': None}]), ['instance 1', 'text']),
                              (dict(json={'instances': ['fine', 7]}), ['instance 1', 'text', 'string']),
                              (dict(json={'txt': 'fine'}), ['txt']),
                              (dict(content=b'not json', headers={'content-type': 'application/json'}), ['not valid JSON'])]:
                r = c.post('/predict', **kw)
                assert r.status_code == 422, (kw, r.status_code, r.text)
                b = r.json()
                assert {'message', 'detail'} <= set(b) and all(w in b['message'] for w in words), (words, b)
            log.flush(); assert len(log.path.read_text().splitlines()) == n0
        from mlnb.track.predictions import served_log
        df = served_log('sentiment', project=prj)
        assert df.text.tolist()[:2] == [texts[0], texts[0]]
    finally:
        h.stop()


def test_text_model_batch_scoring(env, mlnb_cli):
    import pandas as pd
    prj, texts, tmp = env['prj'], env['texts'], env['tmp']
    pd.DataFrame({'id': range(6), 'text': texts[:6]}).to_csv(tmp/'texts.csv', index=False)
    r = mlnb_cli('predict', 'sentiment@champion', tmp/'texts.csv', '--out', tmp/'scored.csv', '--id-column', 'id', cwd=prj.root)
    assert r.returncode == 0, r.stderr[-2000:]
    out = pd.read_csv(tmp/'scored.csv')
    assert list(out.columns) == ['id', 'prediction_label', 'prediction_score', 'prediction_id'] and len(out) == 6
    assert set(out.prediction_label) <= {'LABEL_0', 'LABEL_1'} and out.prediction_score.between(0, 1).all()
