"""The model card is always current and a proper page (issue 19, points 1 and 11): every alias move (promote, rollback)
remakes the cards; the project's card file describes the champion as it is now, names its version, alias and date, is a
standalone HTML document with a charset, readable by others (0644), and shows the gate's metric that promoted it."""
import time, datetime, re
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
    assert f"# Model card: churn version {v1} @champion" in (prj.dir/'cards'/'churn.md').read_text()  # Markdown beside it, for a git diff

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

    # `card NAME@ALIAS` made by hand rewrites the alias's files too: they always show the card made last
    time.sleep(1.1)
    t3 = _now().replace(microsecond=0)
    mlnb.card('churn@champion', project=prj)
    for name in ('churn.html', 'churn@champion.html'):
        text = (prj.dir/'cards'/name).read_text()
        _says(text, v1, 'champion'); assert t3 <= _made(text) <= _now()


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
    from mlnb.audit import record
    for v in (v1, v2):  # each left pending by a retrain (what `retrain --require-approval` records), then approved
        record('retrain.pending', prj, model='churn', version=v)
        approve('churn', v, project=prj)
    text = (prj.dir/'cards'/'churn.html').read_text()
    _says(text, v2, 'champion')
    assert any('promote' in r and 'approved by a person' in r for r in _rows(text)), _rows(text)


# ---- issue 19, points 2, 5, 6 and the card's form (11): what the card says comes from the record

def _client(prj):
    from mlflow.tracking import MlflowClient
    return MlflowClient(prj.tracking_uri, registry_uri=prj.tracking_uri)

def _section(md, title):
    "The text of the card's Markdown section `## title` (up to the next `## `)."
    return md.split(f"## {title}\n", 1)[1].split('\n## ', 1)[0]


def test_training_data_comes_from_the_lineage(two_versions):
    "Point 2: DVC md5, size, rows and columns of each input and the git commit, never 'No data versions' when the lineage holds DVC hashes."
    import hashlib, json
    from mlflow.entities import Dataset, DatasetInput
    from mlnb.monitor.cards import card
    from mlnb.track.lineage import dataset_input
    prj, _, v1, v2 = two_versions
    raw = prj.root/'data'/'raw.csv'
    raw.parent.mkdir(exist_ok=True); raw.write_text("a,b,target\n" + ''.join(f"{i},{i*2},{i%2}\n" for i in range(25)))
    md5 = hashlib.md5(raw.read_bytes()).hexdigest()
    (prj.root/'data'/'raw.csv.dvc').write_text(f"outs:\n- md5: {md5}\n  size: {raw.stat().st_size}\n  hash: md5\n  path: raw.csv\n")
    c = _client(prj)
    rid = c.get_model_version('churn', str(v2)).run_id
    c.set_tag(rid, 'mlnb.dvc.data/raw.csv', md5); c.set_tag(rid, 'mlnb.git.commit', 'abc123def4567890')
    d = dataset_input('data/holdout.csv', rev='v3', md5='feedbeef', rows=40, commit='0123456789ab', columns={'a': 'float64', 'b': 'int64'})
    c.log_inputs(rid, datasets=[DatasetInput(Dataset(d['name'], d['digest'], d['source_type'], d['source'], d['schema'], d['profile']))])
    md = card(f"churn/{v2}", project=prj, log=False).markdown
    sec = _section(md, 'Training data')
    assert 'No data versions' not in sec, sec
    rows = {r.split('|')[1].strip(): [x.strip() for x in r.split('|')[2:-1]] for r in sec.splitlines() if r.startswith('| `')}
    assert rows['`data/raw.csv`'][:5] == [f"`{md5}`", str(raw.stat().st_size), '25', '3', 'dvc add (data/raw.csv.dvc)'], rows
    assert rows['`data/raw.csv`'][-1] == 'abc123def456'  # the run's git commit
    assert rows['`data/holdout.csv`'][0] == '`feedbeef`' and rows['`data/holdout.csv`'][2:4] == ['40', '2'], rows
    assert rows['`data/holdout.csv`'][-2:] == ['v3', '0123456789ab'], rows
    assert 'git commit `abc123def4567890`' in sec
    # a run that recorded nothing says so, naming what would have filled the section
    assert 'No data versions were recorded' in _section(card(f"churn/{v1}", project=prj, log=False).markdown, 'Training data')


def test_metrics_are_grouped_in_the_card_and_the_registry(project, mlnb_cli):
    "Point 5: model quality (with its split), training curves and system metrics apart; `mlnb registry` shows model metrics unless asked."
    import mlflow, numpy as np, pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression
    import mlnb
    from mlnb.monitor.cards import card
    from mlnb.track.metrics import metric_group
    prj = project
    X = pd.DataFrame({'a': np.arange(40.0), 'b': np.arange(40.0) % 7}); y = (X.a > 20).astype(int)
    mlflow.set_tracking_uri(prj.tracking_uri)
    c = _client(prj)
    exp_id = c.create_experiment('cards-metrics')
    with mlflow.start_run(experiment_id=exp_id):
        m = LogisticRegression().fit(X, y)
        mlflow.log_metrics({'val_accuracy': 0.91, 'test_f1': 0.88, 'epoch': 9, 'samples_per_s': 5031.0, 'train_loss': 0.2,
                            'system/cpu_percent': 42.0, 'accuracy/north': 0.7})
        info = mlflow.sklearn.log_model(m, name='model', signature=infer_signature(X, m.predict(X)), pip_requirements=['scikit-learn'])
    mv = mlnb.register(info, 'grouped', project=prj)
    assert [metric_group(k) for k in ('val_accuracy', 'epoch', 'samples_per_s', 'system/cpu_percent')] == ['model', 'curve', 'curve', 'system']
    md = card(f"grouped/{mv.version}", project=prj, log=False).markdown
    met = _section(md, 'Metrics')
    quality = met.split('### Model quality', 1)[1].split('###', 1)[0]
    curves = met.split('### Training curves', 1)[1].split('###', 1)[0]
    system = met.split('### System', 1)[1]
    assert '| val_accuracy | validation | 0.91 |' in quality and '| test_f1 | test | 0.88 |' in quality, quality
    assert not any(k in quality for k in ('epoch', 'samples_per_s', 'train_loss', 'system/')), quality
    assert '| epoch | 9 |' in curves and '| samples_per_s | 5031 |' in curves and '| train_loss | 0.2 |' in curves and 'system/' not in curves
    assert '| system/cpu_percent | 42 |' in system and 'val_accuracy' not in system
    assert '| north | 0.7 |' in met  # the slice of a model metric stays with the model's quality

    r = mlnb_cli('registry', 'grouped', cwd=prj.root)
    assert r.returncode == 0, r.stderr
    assert 'val_accuracy=0.91' in r.stdout and 'test_f1=0.88' in r.stdout
    assert not any(k in r.stdout for k in ('epoch', 'samples_per_s', 'system/', 'train_loss')), r.stdout
    r = mlnb_cli('registry', 'grouped', '--metrics', 'system', cwd=prj.root)
    assert r.returncode == 0 and 'system/cpu_percent=42' in r.stdout and 'val_accuracy' not in r.stdout, r.stdout + r.stderr
    assert 'epoch=9' in mlnb_cli('registry', '--metrics', 'curve', cwd=prj.root).stdout
    assert 'model' in mlnb_cli('registry', '--help', cwd=prj.root).stdout


def test_the_card_gathers_evidence_made_for_its_version(two_versions):
    "Point 6: drift and SHAP run for the model (in other runs) appear in its card with their dates and data; fairness, missing, says how to make it."
    pytest.importorskip('shap')
    import mlnb
    from mlnb.monitor.cards import card
    from mlnb.monitor.datadrift import drift
    from mlnb.monitor.explanations import explain
    prj, (X, y), v1, v2 = two_versions
    mlnb.promote('churn', v2, gate=(X, y), project=prj)
    t0 = _now().replace(microsecond=0)
    drift(X, X * 2 + 1, model='churn@champion')
    explain('churn@champion', X, n_background=20, rows=10, project=prj)
    c = _client(prj)
    train_run = c.get_model_version('churn', str(v2)).run_id
    made = [r for r in c.search_runs([e.experiment_id for e in c.search_experiments()], f"tags.`mlnb.model.run` = '{train_run}'")]
    assert {r.data.tags['mlnb.model.name'] for r in made} == {'churn'} and {r.data.tags['mlnb.model.version'] for r in made} == {str(v2)}
    assert len(made) == 2 and all(r.info.run_id != train_run for r in made)  # evidence lives in runs of its own
    crd = card('churn@champion', project=prj)
    md = crd.markdown
    for title, what in (('Drift', 'reference a DataFrame of 80 rows x 2 columns; current a DataFrame of 80 rows x 2 columns'),
                        ('Top SHAP features', 'a DataFrame of 10 rows x 2 columns')):
        sec = _section(md, title)
        m = re.search(r"Computed (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC in run `([0-9a-f]{32})`", sec)
        assert m, sec
        when = datetime.datetime.strptime(m.group(1), '%Y-%m-%d %H:%M:%S').replace(tzinfo=datetime.timezone.utc)
        assert t0 <= when <= _now() and m.group(2) in {r.info.run_id for r in made}
        assert f"on {what}." in sec, sec
        assert '| a |' in sec or '| b |' in sec  # the result itself
    fair = _section(md, 'Fairness')
    assert 'No fairness check was recorded for this model' in fair and '`mlnb fairness churn@champion ' in fair, fair
    # the version of another model's evidence shows none: v1 has no evidence and says what would make each
    md1 = card(f"churn/{v1}", project=prj, log=False).markdown
    assert f"`mlnb drift " in _section(md1, 'Drift') and f"--model churn/{v1}`" in _section(md1, 'Drift')
    assert f"`mlnb explain churn/{v1} " in _section(md1, 'Top SHAP features')

    # the card, Markdown and HTML, is logged to the model version too
    import pathlib, tempfile
    tags = c.get_model_version('churn', str(v2)).tags
    assert tags['mlnb.card'] == f"runs:/{train_run}/card/card.md" and tags['mlnb.card.html'] == f"runs:/{train_run}/card/card.html"
    with tempfile.TemporaryDirectory() as d:
        html = pathlib.Path(c.download_artifacts(train_run, 'card/card.html', d)).read_text()
    assert html.startswith('<!doctype html>') and f"churn version {v2}" in html and 'Computed ' in html


def test_explain_and_fairness_take_a_registered_model_on_the_command_line(two_versions, mlnb_cli):
    "The commands a card suggests work as printed: `mlnb explain NAME@ALIAS DATA`, `mlnb fairness NAME@ALIAS DATA ...` record evidence for the version."
    pytest.importorskip('shap')
    import mlnb
    prj, (X, y), v1, v2 = two_versions
    mlnb.promote('churn', v2, gate=(X, y), project=prj)
    X.assign(target=y, group=(X.b > 0).map({True: 'hi', False: 'lo'})).to_csv(prj.root/'hold.csv', index=False)
    X.to_csv(prj.root/'feats.csv', index=False)
    r = mlnb_cli('explain', 'churn@champion', 'feats.csv', '--rows', '5', '--background', '10', cwd=prj.root)
    assert r.returncode == 0, r.stderr
    r = mlnb_cli('fairness', 'churn@champion', 'hold.csv', '--sensitive', 'group', '--target', 'target', '--features', 'a', 'b', cwd=prj.root)
    assert r.returncode == 0, r.stderr
    from mlnb.monitor.cards import card
    sec = _section(card('churn@champion', project=prj, log=False).markdown, 'Fairness')
    assert re.search(r"Computed \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC in run `[0-9a-f]{32}` \(fairness churn v\d+\) on hold.csv\.", sec), sec
    assert '| hi |' in sec and '| lo |' in sec
    shap = _section(card('churn@champion', project=prj, log=False).markdown, 'Top SHAP features')
    assert re.search(r"\(explain churn v\d+\) on feats.csv\.", shap), shap
