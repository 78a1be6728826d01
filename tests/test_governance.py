"""Governance of served decisions (issue 22, points 1-2), against a real `mlnb serve` process: the field policy keeps
redacted values out of every file under `.mlnb/`, each decision is found by its id with its model, version, time,
input hash and output, closed segments are sealed in the audit log, `forget` erases a subject everywhere it was held
and `audit verify` still passes, and retention deletes only what its policy says, on the record."""
import json, subprocess, time
from pathlib import Path
import pytest
from conftest import SERVE_CLI as CLI, serve_env, serve_process as server

httpx = pytest.importorskip('httpx')
SUBJECT = 987654321  # the customer who asks to be forgotten (a number no timestamp or hash will hold by chance)

MODEL = '''
import mlflow
class Scorer(mlflow.pyfunc.PythonModel):
    "1 when x > 0: the identifiers and the e-mail reach the model but play no part."
    def predict(self, context, model_input, params=None):
        return (model_input["x"] > 0).astype(int).tolist()
mlflow.models.set_model(Scorer())
'''


def _env(**extra):
    return {**serve_env(), **extra}


def cli(prj, *args, check=True):
    r = subprocess.run([*CLI, *map(str, args)], cwd=prj.root, env=_env(), capture_output=True, text=True, timeout=300)
    if check: assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    "A project whose policy hashes `customer_id` and drops `email`; `scorer` served, 24 requests (6 by SUBJECT), 8 labels."
    import mlflow, numpy as np, pandas as pd
    from mlflow.models import infer_signature
    from mlnb.config import find_project
    from mlnb.project import init
    from mlnb.serving.registry import register, promote
    prj = init(tmp_path_factory.mktemp('gov')/'p')
    toml = prj.root/'mlnb.toml'
    toml.write_text(toml.read_text().replace('fields = {}', 'fields = {customer_id = "hash", email = "drop"}'))
    prj = find_project(prj.root)
    code = prj.root/'scorer.py'; code.write_text(MODEL)
    X = pd.DataFrame({'customer_id': [1], 'email': ['a@b.c'], 'x': [1.0]})
    mlflow.set_tracking_uri(prj.tracking_uri)
    exp = mlflow.get_experiment_by_name('Default')
    with mlflow.start_run(experiment_id=exp.experiment_id if exp else None):
        info = mlflow.pyfunc.log_model(name='model', python_model=str(code), pip_requirements=[],
                                       signature=infer_signature(X, np.array([1])))
    register(info, 'scorer', project=prj); promote('scorer', 1, gate=False, project=prj)
    rows = [{'customer_id': SUBJECT if i % 4 == 0 else 1000 + i, 'email': f"person{i}@example.org", 'x': float(i - 10)} for i in range(24)]
    with server(prj, 'scorer@champion', '--poll-s', '0') as url, httpx.Client(base_url=url) as c:
        ids = []
        for r in rows:
            resp = c.post('/predict', json=r); assert resp.status_code == 200, resp.text
            ids.append(resp.json()['id'])
        assert c.post('/feedback', json=[{'id': i, 'label': 1} for i in ids[:8]]).json() == {'accepted': 8}
    return dict(prj=prj, rows=rows, ids=ids)


def _held(prj) -> bytes:
    "Every byte of every file under `.mlnb/` (the MLflow store, the logs, the audit, the feedback, the runs...)."
    return b''.join(p.read_bytes() for p in (prj.root/'.mlnb').rglob('*') if p.is_file())


def test_redacted_fields_never_reach_disk(served):
    prj = served['prj']
    cli(prj, 'predictions', 'close')
    held = _held(prj)
    assert b'@example.org' not in held and b'person3' not in held  # dropped: in no file at all
    assert str(SUBJECT).encode() not in held  # hashed with the project's key
    from mlnb.track.predictions import served_log
    df = served_log('scorer', project=prj)
    assert len(df) == 24 and 'email' not in df.columns and df.customer_id.str.startswith('h:').all()
    assert df.customer_id.nunique() == 19  # one hash per customer: records can still be joined on it
    assert (df.prediction == (df.x > 0).astype(int)).all()


def test_one_decision_answers_who_said_what_when_on_what(served):
    prj, rows, ids = served['prj'], served['rows'], served['ids']
    cli(prj, 'predictions', 'close')
    from mlnb.data.privacy import FieldPolicy
    from mlnb.govern.records import prediction
    r = prediction(ids[5], project=prj)
    assert (r.model, r.version, r.output, r.input['x']) == ('scorer', 1, 0, -5.0)
    assert r.input_hash == FieldPolicy.of(prj).input_hash(rows[5])  # the key holder can check it against the input
    assert r.sealed is not None and r.intact and abs(r.time - time.time()) < 600
    out = cli(prj, 'predictions', 'show', ids[3]).stdout
    assert 'scorer version 1' in out and 'hmac-sha256:' in out and 'sealed by audit entry #' in out and 'intact' in out
    assert '1' in out.split('labels')[1].splitlines()[0]  # the label that came back
    bad = cli(prj, 'predictions', 'show', 'no-such-id', check=False)
    assert bad.returncode != 0 and 'no prediction with id' in bad.stderr and 'Traceback' not in bad.stderr


def test_forget_erases_the_subject_and_keeps_the_chain(served, tmp_path):
    prj, ids = served['prj'], served['ids']
    cli(prj, 'predictions', 'close')
    out = tmp_path/'subject.json'
    cli(prj, 'export-subject', '--where', f'customer_id={SUBJECT}', '--out', out)
    doc = json.loads(out.read_text())
    assert sorted(p['id'] for p in doc['predictions']) == sorted(ids[0:24:4]) and len(doc['labels']) == 2
    r = cli(prj, 'forget', '--where', f'customer_id={SUBJECT}')
    assert 'erased 6 prediction(s)' in r.stdout + r.stderr
    from mlnb.govern.records import log_files
    from mlnb.track.predictions import served_log
    from mlnb.audit import audit_log
    df = served_log('scorer', project=prj)
    assert len(df) == 18 and not set(ids[0:24:4]) & set(df.id) and df.label.notna().sum() == 6
    assert cli(prj, 'audit', 'verify').returncode == 0
    es = audit_log(prj).entries()
    forget = [e for e in es if e['action'] == 'forget'][-1]
    assert forget['predictions'] == 6 and forget['labels'] == 2 and str(SUBJECT) not in json.dumps(forget)
    assert any(e['action'] == 'predictions.rewrite' for e in es)  # the touched segments were re-sealed
    assert cli(prj, 'forget', '--where', f'customer_id={SUBJECT}').returncode == 0  # nothing left: still fine
    for bad, msg in (('customer_id', 'is not FIELD=VALUE'), ('email=person1@example.org', 'dropped by the privacy policy')):
        r = cli(prj, 'forget', '--where', bad, check=False)
        assert r.returncode != 0 and msg in r.stderr and 'Traceback' not in r.stderr
    seg = log_files(prj)[0]; seg.write_bytes(seg.read_bytes()[:-10])  # tampering is not an erasure
    r = cli(prj, 'audit', 'verify', check=False)
    assert r.returncode != 0 and 'was changed after entry' in r.stderr
    from mlnb.track.predictions import seal_segment
    seal_segment(seg, 'predictions.rewrite', reason='test repair')


def test_retention_deletes_only_what_its_policy_says(served):
    prj = served['prj']
    from mlnb.track.predictions import PredictionLog, served_path, segments
    from mlnb.data.privacy import FieldPolicy
    log = PredictionLog(served_path(prj, 'old'), max_bytes=800, flush_s=60, transform=FieldPolicy.of(prj).log_row)
    now = time.time()
    for day in range(40, 0, -1):  # one row a day for 40 days, many segments
        log.add([{'id': f"d{day}", 'time': now - day * 86400, 'model': 'old', 'version': 1, 'input': {'x': day}, 'output': 0}])
        log.flush()
    log.close(); cli(prj, 'predictions', 'close', 'old')
    segs = segments(served_path(prj, 'old')); assert len(segs) >= 5
    last = {s.name: json.loads(s.read_text().splitlines()[-1])['time'] for s in segs}
    r = cli(prj, 'predictions', 'retain', '--days', '20')
    assert 'deleted' in r.stdout + r.stderr
    kept = {s.name for s in segments(served_path(prj, 'old'))}
    assert kept == {n for n, t in last.items() if t >= now - 20 * 86400} and kept != set(last)
    from mlnb.audit import audit_log
    gone = [e for e in audit_log(prj).entries() if e['action'] == 'predictions.retention' and e['model'] == 'old']
    assert sorted(Path(e['file']).name for e in gone) == sorted(set(last) - kept) and all(e['sha256'] is None for e in gone)
    assert cli(prj, 'audit', 'verify').returncode == 0
    assert 'served' in str(segs[0]) and cli(prj, 'predictions', 'retain').returncode == 0  # the policy's default: 0 keeps all
    r = cli(prj, 'predictions', 'retain', '--days', '-1', check=False)
    assert r.returncode != 0 and 'must be 0 or more' in r.stderr


def test_sealed_segments_are_versioned_with_dvc(served):
    "`mlnb predictions version` mirrors the sealed segments into data/predictions and makes it a DVC version, audited."
    prj = served['prj']
    from mlnb.track.predictions import served_path, segments
    cli(prj, 'predictions', 'version')
    arc = prj.root/'data'/'predictions'
    segs = segments(served_path(prj, 'scorer'))
    assert segs and all((arc/'scorer'/s.name).read_bytes() == s.read_bytes() for s in segs)
    assert (prj.root/'data'/'predictions.dvc').exists()
    log = subprocess.run(['git', 'log', '--format=%s', '--', 'data/predictions.dvc'], cwd=prj.root, capture_output=True, text=True).stdout
    assert 'prediction log:' in log
    from mlnb.audit import audit_log
    e = [e for e in audit_log(prj).entries() if e['action'] == 'predictions.version'][-1]
    assert e['segments'] == len(list(arc.rglob('*.jsonl.*'))) and e['md5'].endswith('.dir')
    assert b'@example.org' not in b''.join(p.read_bytes() for p in arc.rglob('*') if p.is_file())  # the policy holds in the archive too
    again = cli(prj, 'predictions', 'version')
    assert 'unchanged' in again.stdout + again.stderr
