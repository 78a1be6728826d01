"""The model card is always current and a proper page (issue 19, points 1 and 11): every alias move (promote, rollback)
remakes the cards; the project's card file describes the champion as it is now, names its version, alias and date, is a
standalone HTML document with a charset, readable by others (0644), and shows the gate's metric that promoted it."""
import datetime, re
import pytest

pytest.importorskip('sklearn'); pytest.importorskip('mlflow'); pytest.importorskip('jinja2'); pytest.importorskip('mistune')


def _log(project, model, X, y, name):
    "Log `model` (fitted on X, y) in a run of the project; returns the ModelInfo."
    import mlflow
    from mlflow.models import infer_signature
    mlflow.set_tracking_uri(project.tracking_uri)
    client = mlflow.MlflowClient(project.tracking_uri)
    exp = client.get_experiment_by_name('cards')
    exp_id = exp.experiment_id if exp else client.create_experiment('cards')  # not mlflow.set_experiment: that would stay set for the tests after
    with mlflow.start_run(run_name=name, experiment_id=exp_id):
        model.fit(X, y)
        mlflow.log_metric('accuracy', float(model.score(X, y)))
        return mlflow.sklearn.log_model(model, name='model', signature=infer_signature(X, model.predict(X)), pip_requirements=['scikit-learn'])


@pytest.fixture
def two_versions(project):
    "churn v1 (a constant model) and v2 (a logistic regression), registered; a holdout both are scored on."
    import numpy as np, pandas as pd
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression
    import mlnb
    rng = np.random.default_rng(3)
    X = pd.DataFrame({'a': rng.normal(size=200), 'b': rng.normal(size=200)})
    y = (X.a > 0).astype(int)
    v1 = mlnb.register(_log(project, DummyClassifier(strategy='most_frequent'), X, y, 'v1'), 'churn', project=project)
    v2 = mlnb.register(_log(project, LogisticRegression(), X, y, 'v2'), 'churn', project=project)
    return project, (X.iloc[:80], y.iloc[:80]), int(v1.version), int(v2.version)


def _now(): return datetime.datetime.now(datetime.timezone.utc)

def _made(text):
    "The date a card says it was made."
    m = re.search(r"made (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", text)
    assert m, text[:800]
    return datetime.datetime.strptime(m.group(1), '%Y-%m-%d %H:%M:%S').replace(tzinfo=datetime.timezone.utc)

def _rows(text):
    "The rows of the HTML tables in `text`, as lists of cell texts."
    return [[re.sub(r'<[^>]+>', '', c).strip() for c in re.findall(r'<t[dh][^>]*>(.*?)</t[dh]>', tr, re.S)]
            for tr in re.findall(r'<tr>(.*?)</tr>', text, re.S)]

def _says(text, version, alias):
    "The card describes `churn` version `version`, which holds `alias`."
    assert f"Model card: churn version {version} @{alias}" in text, text[:800]
    assert re.search(rf"describes <strong>churn version {version}</strong>, which holds @{alias}", text), text[:1500]


def test_the_card_file_follows_the_champion(two_versions):
    import mlnb
    prj, holdout, v1, v2 = two_versions
    f = prj.dir/'cards'/'churn.html'
    assert not f.exists()  # registering moves no alias: no card file yet

    t0 = _now().replace(microsecond=0)
    mlnb.promote('churn', v1, gate=holdout, project=prj, reason='first')
    text = f.read_text()
    _says(text, v1, 'champion')
    assert t0 <= _made(text) <= _now()
    assert (prj.dir/'cards'/'churn@champion.html').read_text().count(f"churn version {v1}") >= 1

    t1 = _now().replace(microsecond=0)
    cmp = mlnb.promote('churn', v2, gate=holdout, project=prj)
    assert cmp.promoted
    text = f.read_text()
    _says(text, v2, 'champion')
    assert t1 <= _made(text) <= _now()
    # the gate's metric that decided the promotion is in the card: the score, the champion it beat and its score
    rows = _rows(text)
    promo = [r for r in rows if 'promote' in r]
    assert len(promo) == 1, rows
    assert {'@champion', 'accuracy', f"{cmp.candidate_score:.6g}", str(v1), f"{cmp.incumbent_score:.6g}"} <= set(promo[0]), promo
    assert ['gate accuracy (holdout)', f"{cmp.candidate_score:.6g}"] in rows, rows

    # rollback moves the alias back: the file now describes v1 again, made after the rollback
    t2 = _now().replace(microsecond=0)
    mlnb.rollback('churn', project=prj, reason='test')
    text = f.read_text()
    _says(text, v1, 'champion')
    assert f"churn version {v2}" not in text.split('Registry history')[0]
    assert t2 <= _made(text) <= _now()
    assert any('rollback' in r and '@champion' in r and str(v2) in r for r in _rows(text)), _rows(text)  # rolled back to v1, from v2

    # the card logged to v2's run no longer claims the alias it lost
    from mlflow.tracking import MlflowClient
    cl = MlflowClient(prj.tracking_uri, registry_uri=prj.tracking_uri)
    mv2 = cl.get_model_version('churn', str(v2))
    import pathlib, tempfile
    with tempfile.TemporaryDirectory() as d:
        md2 = pathlib.Path(cl.download_artifacts(mv2.run_id, 'card/card.md', d)).read_text()
    assert f"# Model card: churn version {v2}\n" in md2 and 'which holds no alias' in md2


def test_the_card_is_a_standalone_page_with_aliases_not_stages(two_versions, mlnb_cli):
    import mlnb
    prj, holdout, v1, v2 = two_versions
    mlnb.promote('churn', v1, gate=holdout, project=prj)
    f = prj.dir/'cards'/'churn.html'
    text = f.read_text()
    assert text.lstrip().lower().startswith('<!doctype html>')
    for tag in ('<html', '<head>', '<meta charset="utf-8">', '<title>Model card: churn version', '</head>', '<body>', '</body>', '</html>'):
        assert tag in text, tag
    assert f.stat().st_mode & 0o777 == 0o644
    # the alias column shows the version's alias; MLflow's deprecated stages are gone
    assert ['churn', str(v1), '@champion'] == _rows(text.split('Registry history')[1])[1][:3], text[text.find('Registry history'):][:600]
    assert ['aliases', '@champion'] in _rows(text)
    assert 'stage' not in text.lower()
    # `mlnb card NAME@ALIAS` renders the version the alias points to now, and says so
    mlnb.promote('churn', v2, gate=holdout, project=prj)
    r = mlnb_cli('card', 'churn@champion', '--out', 'c.html', '--no-log', cwd=prj.root)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"# Model card: churn version {v2} @champion")
    out = (prj.root/'c.html')
    assert out.stat().st_mode & 0o777 == 0o644 and '<meta charset="utf-8">' in out.read_text()


def test_approve_remakes_the_card(two_versions):
    "`approve` (and so `retrain`, which promotes the same way) moves the alias through `promote`: the card follows."
    import pandas as pd
    from mlnb.pipeline.retraining import approve
    prj, (X, y), v1, v2 = two_versions
    hold = prj.path(prj.settings['retrain.holdout'])
    hold.parent.mkdir(parents=True, exist_ok=True)
    X.assign(**{prj.settings['registry.target']: y}).to_csv(hold, index=False)
    approve('churn', v1, project=prj)
    approve('churn', v2, project=prj)
    text = (prj.dir/'cards'/'churn.html').read_text()
    _says(text, v2, 'champion')
    assert any('promote' in r and 'approved by a person' in r for r in _rows(text)), _rows(text)
