"""Fairness for every task (issue 22, point 5) and LIME beside SHAP (point 6): group metrics with bootstrap intervals on
real registered models (iris: multiclass, diabetes: regression, breast cancer: binary), the card's Fairness section for
each, the `fairness.sensitive` setting, the CLI, bad inputs; LIME on a tabular model and a text pipeline."""
import json, re, time
import numpy as np, pandas as pd
import pytest

pytest.importorskip('fairlearn')

def _section(md, title):
    "The text of the card's Markdown section `## title` (up to the next `## `)."
    return md.split(f"## {title}\n", 1)[1].split('\n## ', 1)[0]

@pytest.fixture(scope='module')
def prj(tmp_path_factory):
    "One project for the module, with three registered models and the data they were checked on."
    import os, mlnb
    from sklearn.datasets import load_diabetes, load_iris
    from sklearn.linear_model import LogisticRegression, Ridge
    old = os.getcwd()
    p = mlnb.init(tmp_path_factory.mktemp('fair')/'proj')
    os.chdir(p.root)
    rng = np.random.default_rng(0)
    iris = load_iris(as_frame=True)
    di = iris.data.assign(sex=rng.choice(['F', 'M'], 150), age=rng.choice(['young', 'old'], 150), species=iris.target_names[iris.target])
    feats_i = list(iris.data.columns)
    r = mlnb.train(LogisticRegression(max_iter=500), di[feats_i + ['species']], target='species', val=0, name='iris')
    mlnb.register(r.run_id, 'iris')
    Xd, yd = load_diabetes(return_X_y=True, as_frame=True)
    dd = Xd.assign(sex_group=np.where(Xd.sex > 0, 'F', 'M'), progression=yd)
    r = mlnb.train(Ridge(), dd[list(Xd.columns) + ['progression']], target='progression', val=0, name='diabetes')
    mlnb.register(r.run_id, 'diabetes')
    yield p, di, feats_i, dd, list(Xd.columns)
    os.chdir(old)


def test_multiclass_fairness_of_a_registered_model_is_on_its_card(prj):
    "Per-group per-class recall and precision with intervals, intersectional groups, logged for the version, shown on the card."
    from mlnb.monitor.cards import card
    from mlnb.monitor.fair import fairness
    p, di, feats, _, _ = prj
    fr = fairness('iris/1', di, sensitive='sex,age', target='species', features=feats, project=p)
    assert fr.task == 'multiclass' and fr.classes == ['setosa', 'versicolor', 'virginica'] and fr.sensitive == 'sex|age'
    assert sorted(fr.table.group) == ['F|old', 'F|young', 'M|old', 'M|young']
    for c in fr.classes: assert {f'recall_{c}', f'precision_{c}', f'recall_{c}_lo', f'recall_{c}_hi'} <= set(fr.table.columns)
    assert set(fr.gaps) >= {'accuracy_difference', 'recall_difference', 'precision_difference', 'recall_difference/versicolor'}
    assert fr.gaps['recall_difference'] == max(fr.gaps[f'recall_difference/{c}'] for c in fr.classes)
    d = json.loads(json.dumps(fr.to_dict()))  # JSON, NaN-free
    assert d['task'] == 'multiclass' and len(d['groups']) == 4
    sec = _section(card('iris/1', project=p, log=False).markdown, 'Fairness')
    assert re.search(r"Computed .* in run `[0-9a-f]{32}` \(fairness iris v1\)", sec), sec
    assert 'By `sex|age` (multiclass: classes setosa, versicolor, virginica)' in sec, sec
    assert '| group | n | accuracy | recall setosa | precision setosa | recall versicolor |' in sec, sec
    row = next(l for l in sec.splitlines() if l.startswith('| F|young |'))
    assert re.search(r"\| \d\.?\d* \[\d\.?\d*, \d\.?\d*\] \|", row), row  # value [low, high] per class
    assert 'bootstrap 95% intervals' in sec and 'Within noise' in sec  # 150 rows in four groups: nothing is a finding


def test_regression_fairness_of_a_registered_model_is_on_its_card(prj):
    "MAE, RMSE and bias per group with intervals; the card shows error per group and the chart."
    from mlnb.monitor.cards import card
    from mlnb.monitor.fair import fairness
    p, _, _, dd, feats = prj
    fr = fairness('diabetes/1', dd, sensitive='sex_group', target='progression', features=feats, project=p)
    assert fr.task == 'regression' and fr.metrics == ['mae', 'rmse', 'bias']
    assert (fr.table.mae_lo <= fr.table.mae).all() and (fr.table.mae <= fr.table.mae_hi).all() and fr.table.reliable.all()
    for k in ('mae_difference', 'rmse_difference', 'bias_difference'): assert k in fr.gaps and len(fr.gap_ci[k]) == 2
    c = card('diabetes/1', project=p, log=False)
    sec = _section(c.markdown, 'Fairness')
    assert 'By `sex_group` (regression)' in sec and 'mae difference' in sec, sec
    assert '| group | n | MAE | RMSE | bias (mean error) | note |' in sec, sec
    assert re.search(r"\| F \| 207 \| \d+\.?\d* \[\d+\.?\d*, \d+\.?\d*\] \|", sec), sec
    assert 'MAE by sex_group' in c.html  # the chart


def test_binary_fairness_keeps_its_fields_and_marks_small_groups():
    "Binary: the parity and equalized-odds gaps as before; a 4-row group is marked small and its gap reads as noise."
    from mlnb.monitor.fair import fairness, fairness_view
    df = pd.DataFrame({'g': ['a'] * 4 + ['b'] * 4, 'y': [1, 1, 0, 0, 1, 1, 0, 0], 'p': [1, 0, 0, 0, 1, 1, 1, 0]})
    fr = fairness(None, df, sensitive='g', target='y', prediction='p')
    assert (fr.demographic_parity_difference, fr.equalized_odds_difference) == (0.5, 0.5) and fr.task == 'binary'
    assert fr.gaps['demographic_parity_difference'] == 0.5 and fr.noise['demographic_parity_difference']
    assert not fr.table.reliable.any() and fr.table.note.str.contains('small group').all()
    assert 'small groups: a, b' in fr.summary and 'within noise' in fr.summary
    v = fairness_view(fr.to_dict())
    assert v['headers'] == ['selection rate', 'TPR', 'FPR', 'accuracy'] and 'Small groups, not findings: a, b' in v['noise_note']
    # a real gap on enough rows is beyond noise
    rng = np.random.default_rng(1)
    n = 2000
    g = rng.choice(['a', 'b'], n)
    big = pd.DataFrame({'g': g, 'y': rng.integers(0, 2, n), 'p': np.where(g == 'a', rng.random(n) < 0.8, rng.random(n) < 0.2).astype(int)})
    t = time.time()
    fr = fairness(None, big, sensitive='g', target='y', prediction='p')
    assert time.time() - t < 3
    assert fr.demographic_parity_difference > 0.5 and not fr.noise['demographic_parity_difference'] and fr.table.reliable.all()
    lo, hi = fr.gap_ci['demographic_parity_difference']
    assert lo <= fr.demographic_parity_difference <= hi
    # an old binary-only record still renders
    old = {'sensitive': 'g', 'demographic_parity_difference': 0.5, 'equalized_odds_difference': 0.5,
           'groups': [{'group': 'a', 'n': 4, 'selection_rate': 0.25, 'tpr': 0.5, 'fpr': 0.0, 'accuracy': 0.75}]}
    v = fairness_view(old)
    assert v['rows'][0]['cells'] == ['0.25', '0.5', '0', '0.75'] and 'demographic parity difference 0.5' in v['headline']


def test_fairness_is_seeded_and_fast_on_thousands_of_rows():
    from mlnb.monitor.fair import fairness
    rng = np.random.default_rng(2)
    n = 5000
    df = pd.DataFrame({'g': rng.choice(list('abcd'), n), 'h': rng.choice(['x', 'y'], n), 'y': rng.integers(0, 4, n), 'p': rng.integers(0, 4, n)})
    t = time.time()
    a = fairness(None, df, sensitive=['g', 'h'], target='y', prediction='p')
    assert time.time() - t < 3 and a.task == 'multiclass' and len(a.table) == 8
    b = fairness(None, df, sensitive=['g', 'h'], target='y', prediction='p')
    pd.testing.assert_frame_equal(a.table, b.table)
    df.loc[:9, 'h'] = None  # a row missing one of the columns is in no intersection
    c = fairness(None, df, sensitive='g,h', target='y', prediction='p', n_boot=0)
    assert c.table.n.sum() == n - 10 and c.table[[m + '_lo' for m in c.metrics]].isna().all().all()


@pytest.mark.parametrize('kw, msg', [
    (dict(sensitive='race', target='y'), "the sensitive column 'race' is not in the data"),
    (dict(sensitive='g', target='nope'), "the target column 'nope' is not in the data"),
    (dict(sensitive='g', target='r', task='binary'), "so it is not binary"),
    (dict(sensitive=[], target='y'), "no sensitive column"),
    (dict(sensitive='g', target='s', task='regression'), "is not numeric, so it cannot be a regression target"),
    (dict(sensitive='empty', target='y'), "no rows with both a group"),
    (dict(sensitive='g', target='y', task='ranking'), "unknown task 'ranking'"),
])
def test_bad_inputs_are_one_line_errors_with_a_hint(kw, msg):
    from mlnb.monitor.fair import FairnessError, fairness
    df = pd.DataFrame({'g': list('abab'), 'y': [0, 1, 1, 0], 'r': [0.1, 2.5, 3.3, 4.0], 's': list('wxyz'), 'empty': [None] * 4})
    with pytest.raises(FairnessError) as e: fairness(None, df.assign(p=df[kw['target']] if kw['target'] in df else 0), prediction='p', **kw)
    assert msg in str(e.value) and '\n' not in str(e.value) and e.value.hint


def _cli(*args):
    "`mlnb ARGS` in this process (what the command prints, as the shell would show it): (status, stdout, stderr)."
    import contextlib, io
    from mlnb.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: rc = main([str(a) for a in args])
        except SystemExit as e: rc = e.code
    return rc, out.getvalue(), err.getvalue()


def test_setting_names_the_sensitive_columns_for_the_function_the_card_and_the_cli(prj):
    "With fairness.sensitive and fairness.target set, `fairness(model, data)` needs no columns, the card's command names them, the CLI takes a comma list."
    import mlnb
    from mlnb.monitor.cards import card
    from mlnb.monitor.fair import fairness
    p, di, feats, _, _ = prj
    toml = p.root/'mlnb.toml'
    text = toml.read_text()
    try:
        toml.write_text(text.replace('sensitive = []', 'sensitive = ["sex", "age"]').replace('target = ""\n\n[perf]', 'target = "species"\n\n[perf]'))
        q = mlnb.find_project(p.root)
        assert q.settings['fairness.sensitive'] == ['sex', 'age'] and q.settings['fairness.target'] == 'species'
        fr = fairness(None, di.assign(p=di.species), prediction='p', project=q)
        assert fr.sensitive == 'sex|age' and fr.gaps['accuracy_difference'] == 0
        # a version without fairness evidence: the card's Fairness section gives the exact command, with the columns
        r = mlnb.train(__import__('sklearn.linear_model', fromlist=['x']).LogisticRegression(max_iter=300), di[feats + ['species']],
                       target='species', val=0, name='iris-2')
        mlnb.register(r.run_id, 'iris')
        sec = _section(card('iris/2', project=q, log=False).markdown, 'Fairness')
        assert '`mlnb fairness iris/2 DATA --sensitive sex,age --target species`' in sec, sec
        di.to_csv(p.root/'iris.csv', index=False)
        rc, out, err = _cli('fairness', 'iris/2', 'iris.csv', '--sensitive', 'sex,age', '--target', 'species', '--features', *feats)
        assert rc == 0, err
        assert out.startswith('fairness by sex|age: accuracy difference'), out
        sec = _section(card('iris/2', project=q, log=False).markdown, 'Fairness')
        assert '| F|young |' in sec and 'recall virginica' in sec, sec
    finally:
        toml.write_text(text)


# --- LIME beside SHAP (point 6) ---

def test_lime_on_a_tabular_model_has_the_shape_of_shap_and_is_logged(prj):
    pytest.importorskip('lime')
    from mlflow.tracking import MlflowClient
    from mlnb.monitor.explanations import explain
    p, di, feats, _, _ = prj
    ex = explain('iris/1', di[feats], method='lime', rows=4, num_samples=300, project=p)
    assert ex.method == 'lime' and ex.explainer == 'lime-tabular' and ex.weights.shape == (4, 4)
    assert list(ex.importance.columns) == ['feature', 'mean_abs_weight'] and ex.importance.feature[0].startswith('petal')
    assert '<table' in ex._repr_html_() and 'LIME' in repr(ex)
    shap_ex = explain('iris/1', di[feats].iloc[:4], method='shap', n_background=20, project=p)
    assert shap_ex.weights.shape == ex.weights.shape and list(shap_ex.weights.columns) == list(ex.weights.columns)  # one shape for both
    c = MlflowClient(p.tracking_uri)
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()], "tags.`explain.method` = 'lime'")
    assert runs and runs[0].data.tags['mlnb.model.name'] == 'iris' and runs[0].data.tags['explain.explainer'] == 'lime-tabular'
    assert {a.path for a in c.list_artifacts(runs[0].info.run_id, 'explain')} == {'explain/importance.csv', 'explain/lime_bar.png'}
    ex = explain('iris/1', di[feats], method='lime', rows=4, num_samples=300, project=p)  # the latest explanation: LIME's, on the card
    from mlnb.monitor.cards import card
    sec = _section(card('iris/1', project=p, log=False).markdown, 'Top SHAP features')
    assert 'Explained with LIME' in sec and '| feature | mean abs LIME weight |' in sec and '| petal' in sec, sec


def test_lime_on_a_text_pipeline_and_the_project_default(prj, monkeypatch):
    pytest.importorskip('lime')
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from mlnb.core import MlnbUsageError
    from mlnb.monitor.explanations import explain
    texts = ['good great movie', 'bad awful film', 'great fun plot', 'awful boring plot', 'lovely good cast', 'terrible bad cast'] * 5
    pipe = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, [1, 0, 1, 0, 1, 0] * 5)
    ex = explain(pipe, texts[:3], method='lime', num_samples=300)
    assert ex.explainer == 'lime-text' and ex.output == 1
    assert ex.weights.loc[0, 'good'] > 0 and ex.weights.loc[1, 'bad'] < 0
    monkeypatch.setenv('MLNB_EXPLAIN_METHOD', 'lime')  # the project's default
    assert explain(pipe, texts[:2], num_samples=200).method == 'lime'
    with pytest.raises(MlnbUsageError, match="unknown explanation method 'anchor'") as e: explain(pipe, texts[:2], method='anchor')
    assert 'shap or lime' in e.value.hint


def test_explain_cli_takes_method_lime(prj):
    pytest.importorskip('lime')
    p, di, feats, _, _ = prj
    di[feats].to_csv(p.root/'x.csv', index=False)
    rc, out, err = _cli('explain', 'iris/1', 'x.csv', '--method', 'lime', '--rows', '3')
    assert rc == 0, err
    assert out.startswith('explain: lime-tabular (LIME) on LogisticRegression, 3 rows'), out
    rc, out, err = _cli('explain', 'iris/1', 'x.csv', '--method', 'anchor')
    assert rc == 2 and 'lime' in err and 'shap' in err, err


def test_retrain_report_has_the_fairness_of_challenger_and_champion_on_the_holdout(prj):
    "`fairness_on_holdout` (what `retrain` calls when fairness.sensitive is set): each version's fairness, logged as evidence for it; the report's section."
    import mlnb
    from mlflow.tracking import MlflowClient
    from sklearn.linear_model import LogisticRegression
    from mlnb.pipeline.report import RetrainReport
    from mlnb.pipeline.retraining import fairness_on_holdout
    p, di, feats, _, _ = prj
    r = mlnb.train(LogisticRegression(C=0.05, max_iter=300), di[feats + ['species']], target='species', val=0, name='iris-weak')
    v = int(mlnb.register(r.run_id, 'iris').version)
    di.to_csv(p.root/'holdout.csv', index=False)
    toml = p.root/'mlnb.toml'
    text = toml.read_text()
    try:
        toml.write_text(text.replace('sensitive = []', 'sensitive = ["sex"]').replace('target = ""\n\n[perf]', 'target = "species"\n\n[perf]'))
        q = mlnb.find_project(p.root)
        with mlnb.run(name='retrain iris', project=q):  # as in `retrain`: its own run is open, the evidence runs nest in it
            out = fairness_on_holdout(q, 'iris', v, 1, p.root/'holdout.csv')
    finally:
        toml.write_text(text)
    assert out['challenger']['version'] == v and out['champion']['version'] == 1 and 'note' not in out
    assert out['challenger']['result']['task'] == 'multiclass' and out['challenger']['result']['sensitive'] == 'sex'
    c = MlflowClient(p.tracking_uri)
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()], f"tags.`mlnb.model.name` = 'iris' and tags.`mlnb.model.version` = '{v}'")
    assert [x.data.tags['fairness.data'] for x in runs if 'fairness.sensitive' in x.data.tags] == ['holdout.csv']
    rep = RetrainReport('iris', decision='kept', version=v, fairness=out,
                        comparison=dict(challenger=v, champion=1, metric='accuracy', challenger_score=0.9, champion_score=0.95, wins=False))
    md, page = rep.markdown(), rep.html()
    sec = md.split('## Fairness\n', 1)[1].split('\n## ', 1)[0]
    assert f'**challenger v{v} by sex (multiclass)' in sec and '**champion v1 by sex (multiclass)' in sec, sec
    assert '| group | n | accuracy | recall setosa |' in sec and '| F |' in sec and '| M |' in sec, sec
    assert '<h2>Fairness</h2>' in page and 'accuracy by sex' in page
    assert md.index('## Champion vs challenger') < md.index('## Fairness')
    none = RetrainReport('iris', decision='no-trigger', fairness=dict(note="no challenger was registered, so there was nothing to check for fairness"))
    assert 'nothing to check for fairness' in none.markdown().split('## Fairness\n', 1)[1]
    bad = fairness_on_holdout(mlnb.find_project(p.root), 'iris', v, None, p.root/'holdout.csv')  # no sensitive column set
    assert 'fairness could not be computed on the holdout: no sensitive column' in bad['note']
