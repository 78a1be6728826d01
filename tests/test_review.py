"""Human review per decision (issue 22, point 4) against a real `mlnb serve` process: a review policy holds
low-confidence predictions (`pending_review` with a ticket), `GET /decisions/{ticket}` gives the final answer once a
reviewer decided through the CLI, the decision is audited and lands as a trusted label, and bad policies and bad
decisions are one-line errors."""
import json, subprocess
import pytest
from conftest import SERVE_CLI as CLI, serve_env, serve_process as server

httpx = pytest.importorskip('httpx')

MODEL = '''
import math, mlflow
class Risk(mlflow.pyfunc.PythonModel):
    "The probability of default: a logistic curve of x (near 0.5 when x is near 0: unsure)."
    def predict(self, context, model_input, params=None):
        return [1 / (1 + math.exp(-v)) for v in model_input["x"]]
mlflow.models.set_model(Risk())
'''


def _env(**extra):
    return {**serve_env(), **extra}


def cli(prj, *args, check=True, **env):
    r = subprocess.run([*CLI, *map(str, args)], cwd=prj.root, env=_env(**env), capture_output=True, text=True, timeout=300)
    if check: assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.fixture(scope='module')
def prj(tmp_path_factory):
    import mlflow, pandas as pd
    from mlflow.models import infer_signature
    from mlnb.config import find_project
    from mlnb.project import init
    from mlnb.serving.registry import register, promote
    prj = init(tmp_path_factory.mktemp('review')/'p')
    toml = prj.root/'mlnb.toml'
    toml.write_text(toml.read_text().replace('review = {}', 'review = {confidence = 0.8, mode = "hold"}'))
    prj = find_project(prj.root)
    code = prj.root/'risk.py'; code.write_text(MODEL)
    mlflow.set_tracking_uri(prj.tracking_uri)
    exp = mlflow.get_experiment_by_name('Default')
    with mlflow.start_run(experiment_id=exp.experiment_id if exp else None):
        info = mlflow.pyfunc.log_model(name='model', python_model=str(code), pip_requirements=[],
                                       signature=infer_signature(pd.DataFrame({'x': [1.0]}), [0.7]))
    register(info, 'risk', project=prj); promote('risk', 1, gate=False, project=prj)
    return prj


def test_low_confidence_is_held_reviewed_and_answered(prj):
    with server(prj, 'risk@champion', '--poll-s', '0') as url, httpx.Client(base_url=url) as c:
        sure = c.post('/predict', json={'x': 4.0}).json()
        assert sure['prediction'] == pytest.approx(0.982, abs=1e-3) and 'review' not in sure
        held = c.post('/predict', json={'x': 0.3}).json()
        assert held['prediction'] is None and held['review']['status'] == 'pending_review'
        ticket = held['review']['ticket']; assert ticket == held['id']
        both = c.post('/predict', json=[{'x': -0.2}, {'x': -5.0}]).json()
        assert both['predictions'][0] is None and both['predictions'][1] == pytest.approx(0.0067, abs=1e-3)
        assert both['reviews'][0]['status'] == 'pending_review' and both['reviews'][1] is None
        d = c.get(f'/decisions/{ticket}').json()
        assert (d['status'], d['prediction'], d['reason']) == ('pending', None, 'confidence 0.574 below 0.8')
        assert d['model_answer'] == pytest.approx(0.574, abs=1e-3)
        r = c.get('/decisions/' + 'f' * 32)
        assert r.status_code == 404 and 'no review case' in r.json()['message']

        listed = cli(prj, 'review').stdout
        assert ticket in listed and both['ids'][0] in listed and 'pending' in listed
        cli(prj, 'decide', ticket, 'override', '--label', '1', '--reason', 'called the customer: income unverified')
        d = c.get(f'/decisions/{ticket}').json()
        assert (d['status'], d['prediction'], d['why']) == ('overridden', 1, 'called the customer: income unverified') and d['by']
        cli(prj, 'decide', both['ids'][0], 'approve', '--reason', 'history is clean')
        assert c.get(f"/decisions/{both['ids'][0]}").json()['prediction'] == 0  # the model's class: p < 0.5
        assert 'pending' not in cli(prj, 'review').stdout

        again = cli(prj, 'decide', ticket, 'approve', '--reason', 'twice', check=False)
        assert again.returncode != 0 and 'already overridden' in again.stderr and 'Traceback' not in again.stderr
        bare = cli(prj, 'decide', both['ids'][0], 'approve', check=False)
        assert bare.returncode != 0 and 'Traceback' not in bare.stderr
    from mlnb.audit import audit_log
    from mlnb.track.predictions import feedback_path, served_log
    es = [e for e in audit_log(prj).entries() if e['action'] == 'review']
    assert [(e['ticket'], e['decision'], e['label']) for e in es] == [(ticket, 'override', 1), (both['ids'][0], 'approve', 0)]
    fb = [json.loads(l) for l in feedback_path(prj, 'risk').read_text().splitlines()]
    assert {(f['id'], f['label'], f['source']) for f in fb} == {(ticket, 1, 'review'), (both['ids'][0], 0, 'review')}
    log = served_log('risk', project=prj).set_index('id')
    assert log.loc[ticket, 'label'] == 1  # the trusted label joins the logged decision


def test_a_bad_policy_stops_the_server_with_one_line(prj):
    r = cli(prj, 'serve', 'risk@champion', '--port', '1', check=False, MLNB_SERVE_REVIEW='{"confidence": 0.8, "mode": "later"}')
    assert r.returncode != 0 and "mode 'later' is not hold or flag" in r.stderr and 'Traceback' not in r.stderr


def test_the_card_states_the_oversight_in_force(prj):
    "The AI Act section's human oversight names the review policy and how many decisions people made (after the test above)."
    from mlnb.monitor.cards import card
    md = card('risk@champion', log=False, project=prj).markdown
    assert 'Served decisions go to human review by the policy in force (`serve.review`: confidence 0.8, mode "hold")' in md
    assert '2 reviewed so far' in md
