"""Issue 19, points 8 and 9: `train` on a table file and `retrain` pass the data quality gate (the first run records the
reference and says so; `--no-gate` is audited and tagged); the retrain report's cost and money figures."""
import numpy as np, pandas as pd, pytest
from mlnb.core import VerbContext, events, run_verb

@pytest.fixture
def proj(tmp_path, monkeypatch):
    "A bare project holding a 40-row table `t.csv`."
    from mlnb.config import Project
    (tmp_path/'mlnb.toml').write_text('[tracking]\nlineage = false\nsystem_interval = 0.0\n')  # quick runs
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    df = pd.DataFrame({'a': rng.normal(size=40), 'b': rng.normal(size=40)})
    df['y'] = (df.a + df.b > 0).astype(int)
    df.to_csv('t.csv', index=False)
    return Project(tmp_path), df

def _train(*extra):
    from sklearn.linear_model import LogisticRegression
    return run_verb(['train', 'clf', '--data', 't.csv', '--target', 'y', '--no-log-model', *extra], VerbContext(namespace=dict(clf=LogisticRegression())))

def _tags(prj, run_id):
    from mlflow import MlflowClient
    return MlflowClient(prj.tracking_uri).get_run(run_id).data.tags

def _n_runs(prj):
    from mlflow import MlflowClient
    c = MlflowClient(prj.tracking_uri)
    return len(c.search_runs([e.experiment_id for e in c.search_experiments()]))

def test_train_gate(proj):
    "Before: `mlnb train` never checked its data (bad data trained silently) and had no `--no-gate`."
    from mlnb.audit import audit_log
    from mlnb.data.quality import QualityError
    prj, df = proj
    said = []
    sub = events.on('gate.*', lambda ev: said.append((ev.kind, str(ev.data.get('msg')))))
    try:
        r = _train()  # no reference yet: this run records one and says so
        ref = prj.dir/'references'/'t.csv.json'
        assert ref.exists() and said and said[0][0] == 'gate.recorded' and 'recorded' in said[0][1], said
        assert _tags(prj, r.run_id)['mlnb.gate'] == 'recorded'
        assert _tags(prj, _train().run_id)['mlnb.gate'] == 'passed'  # the same data passes
        bad = df.copy(); bad.loc[0, 'a'] = 1e6; bad.loc[1, 'b'] = None
        bad.to_csv('t.csv', index=False)
        n = _n_runs(prj)
        with pytest.raises(QualityError) as e: _train()
        msg = str(e.value)
        assert 'quality gate' in msg and 'a: range' in msg and 'b: nulls' in msg and '\n' not in msg, msg  # one line (the faces print an MlnbError so)
        assert '--no-gate' in e.value.hint and 'references/t.csv.json' in e.value.hint
        assert _n_runs(prj) == n  # stopped before a run was opened or anything fit
        bad.loc[1, 'b'] = 0.0; bad.to_csv('t.csv', index=False)  # still out of range, but something scikit-learn fits
        with pytest.raises(QualityError): _train()
        r = _train('--no-gate')  # on purpose: audited and tagged
        assert _tags(prj, r.run_id)['mlnb.gate'] == 'skipped'
        last = audit_log(prj).entries()[-1]
        assert (last['action'], last['what'], last['data']) == ('gate.skipped', 'train', 't.csv')
    finally: events.off(sub)

def test_price_setting(proj, monkeypatch):
    "retrain.price_per_hour: unset -> no money figure; a number or a table per device kind -> money, from mlnb.toml or the environment."
    from mlnb.config import ConfigError, Project
    from mlnb.pipeline.report import Cost, CostClock, price_of
    prj, _ = proj
    assert prj.settings['retrain.price_per_hour'] == 0.0 and CostClock().start().stop(0.0).money is None
    (prj.root/'mlnb.toml').write_text('[retrain]\nprice_per_hour = {cpu = 0.5, gpu = 4.0}\n')
    p = Project(prj.root).settings['retrain.price_per_hour']
    assert p == dict(cpu=0.5, gpu=4.0)
    assert price_of(Cost(10.0, 3600.0, gpu_s=1800.0, gpus=1), p)[0] == pytest.approx(0.5 + 2.0)
    (prj.root/'mlnb.toml').write_text('[retrain]\nprice_per_hour = 3\n')
    assert Project(prj.root).settings['retrain.price_per_hour'] == 3.0
    assert Project(prj.root, environ={'MLNB_RETRAIN_PRICE_PER_HOUR': '{"gpu": 2}'}).settings['retrain.price_per_hour'] == {'gpu': 2}
    (prj.root/'mlnb.toml').write_text('[retrain]\nprice_per_hour = "cheap"\n')
    with pytest.raises(ConfigError): Project(prj.root)
    c = CostClock().start().stop(3.0)
    assert c.money is not None and c.money > 0 and 'cost/money' in c.metrics()
    assert any(r['what'] == 'money' and '3/hour' in r['value'] for r in c.rows())
