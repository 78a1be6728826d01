"""Drift: mlnb's decisions and scores against real Evidently DataDriftPreset runs, the profile cache, the CLI gate."""
import json, logging, math, warnings
import numpy as np, pandas as pd
import pytest

from mlnb.core import events
from mlnb.monitor.datadrift import drift, evidently_drift
from mlnb.monitor.profiles import DriftInputError, drift_profile, profile_cache

warnings.filterwarnings('ignore', category=RuntimeWarning)  # Evidently's own chi-square on unseen categories


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch, tmp_path):
    "Each test starts with an empty in-memory profile cache and outside any project (no disk cache)."
    monkeypatch.delenv('MLNB_PROJECT', raising=False)
    monkeypatch.chdir(tmp_path)
    profile_cache.clear()
    yield
    profile_cache.clear()


def mixed(n, seed, shift=0.0, m=None):
    "Every column kind Evidently tests by default; `shift` moves each of them."
    rng = np.random.default_rng(seed)
    m = n if m is None else m
    df = pd.DataFrame({
        'f': rng.normal(shift, 1, m),                                         # float: K-S / Wasserstein
        'i_many': rng.integers(0, 200, m) + int(shift * 40),                  # int, > 10 values: numerical
        'i_few': rng.integers(0, 4 + (shift > 0), m),                         # int, <= 10 values: categorical
        'i_bin': (rng.random(m) < 0.4 + shift / 3).astype(int),              # int, 2 values: Z-test / JS
        'f_few': rng.choice([0.5, 1.5, 2.5, 3.5], m, p=[.4, .3, .2, .1] if not shift else [.25] * 4),  # float, <= 5 values
        'f_two': rng.choice([1.0, 2.0], m),                                   # float, 2 values
        'const': np.full(m, 7.0),                                             # one value: Z-test p = 1
        'obj': rng.choice(['a', 'b', 'c'] + (['d'] if shift else []), m),    # object labels, a new one in current
        'flag': rng.random(m) < 0.3 + shift / 4,                              # bool
        'cat': pd.Categorical(rng.choice(['x', 'y', 'z'], m, p=[.5, .3, .2] if not shift else [.2, .3, .5]), categories=['x', 'y', 'z', 'w']),
        'str': pd.array(rng.choice(['u', 'v'], m), dtype='string'),
    })
    df.loc[df.index[:5], 'f'] = np.nan
    df.loc[df.index[5:7], 'f'] = np.inf
    df.loc[df.index[:3], 'obj'] = None
    return df


def assert_same_as_evidently(ref, cur, **kw):
    ours, ev = drift(ref, cur, **kw), evidently_drift(ref, cur, **kw)
    a, b = ours.table.set_index('column'), ev.table.set_index('column')
    assert sorted(a.index) == sorted(b.index)
    b = b.loc[a.index]
    for col in a.index:
        ra, rb = a.loc[col], b.loc[col]
        assert ra.test == rb.test, (col, ra.test, rb.test)
        assert ra.threshold == pytest.approx(rb.threshold), col
        assert bool(ra.drifted) == bool(rb.drifted), (col, ra.score, rb.score)
        if math.isnan(rb.score): assert math.isnan(ra.score), col
        else: assert abs(ra.score - rb.score) <= 1e-6, (col, ra.test, ra.score, rb.score)
    assert ours.share == pytest.approx(ev.evidently_share)
    return ours, ev


@pytest.mark.parametrize('n,m', [(300, 300), (1000, 700), (1001, 1500), (5000, 5000), (20000, 12000)])
@pytest.mark.parametrize('shift', [0.0, 0.3])
def test_every_column_kind_matches_evidently(n, m, shift):
    ours, _ = assert_same_as_evidently(mixed(n, 0), mixed(n, 1, shift, m=m))
    tests = set(ours.table.test)
    assert tests >= ({'ks', 'chisquare', 'z'} if n <= 1000 else {'wasserstein', 'jensenshannon'})
    if shift: assert {'f', 'obj', 'cat'} <= set(ours.drifted)


def test_numeric_only_large_matches_evidently():
    rng = np.random.default_rng(3)
    ref = pd.DataFrame({f"x{i}": rng.normal(0, 1 + i / 10, 30000) for i in range(8)})
    cur = pd.DataFrame({f"x{i}": rng.normal(0.12 * (i % 3 == 0), 1 + i / 10, 25000) for i in range(8)})
    ours, _ = assert_same_as_evidently(ref, cur)
    assert set(ours.table.test) == {'wasserstein'}


def test_thresholds_at_the_edges_match_evidently():
    "Scores close to the thresholds: decisions still equal Evidently's."
    rng = np.random.default_rng(11)
    ref = pd.DataFrame({f"s{k}": rng.normal(0, 1, 4000) for k in range(6)})
    cur = pd.DataFrame({f"s{k}": rng.normal(0.06 + 0.015 * k, 1, 4000) for k in range(6)})  # straddles 0.1
    ours, _ = assert_same_as_evidently(ref, cur)
    assert 0 < len(ours.drifted) < 6


def test_acceptance_three_of_twenty_and_a_categorical_shift():
    rng = np.random.default_rng(5)
    def frame(seed, shift=()):
        r = np.random.default_rng(seed)
        df = pd.DataFrame({f"x{i}": r.normal(0, 1, 10000) for i in range(19)})
        df['region'] = r.choice(['north', 'south', 'east', 'west'], 10000)
        for c in shift: df[c] += 0.5
        return df
    ref = frame(0)
    moved = frame(1, ['x2', 'x9', 'x15'])
    ours, ev = assert_same_as_evidently(ref, moved)
    assert ours.drifted == ['x2', 'x9', 'x15'] and sorted(ev.drifted) == sorted(ours.drifted)
    assert drift(ref, frame(2)).drifted == []
    cat = frame(3)
    cat['region'] = rng.choice(['north', 'south', 'east', 'west'], 10000, p=[.55, .15, .15, .15])
    ours, ev = assert_same_as_evidently(ref, cat)
    assert ours.drifted == ['region'] == ev.drifted


def test_text_columns_delegate_to_evidently():
    rng = np.random.default_rng(2)
    words = np.array('the quick brown fox jumps over a lazy dog while rain falls on green hills'.split())
    def texts(k, bias):
        return [' '.join(rng.choice(words, 6, p=bias)) + f" {i}" for i in range(k)]
    p0 = np.full(len(words), 1 / len(words)); p1 = np.r_[np.full(8, 0.11), np.full(len(words) - 8, 0.12 / (len(words) - 8))]
    ref = pd.DataFrame({'note': texts(400, p0), 'x': rng.normal(size=400)})
    cur = pd.DataFrame({'note': texts(400, p1 / p1.sum()), 'x': rng.normal(size=400)})
    ours, ev = assert_same_as_evidently(ref, cur)
    assert ours.table.set_index('column').loc['note', 'type'] == 'text'


def test_target_and_prediction_drift():
    rng = np.random.default_rng(4)
    ref = pd.DataFrame({'x': rng.normal(size=2000), 'y': rng.integers(0, 2, 2000), 'pred': rng.normal(size=2000)})
    cur = ref.assign(y=(rng.random(2000) < 0.8).astype(int))
    res = drift(ref, cur, target='y', prediction='pred')
    assert (res.target_drift, res.prediction_drift) == (True, False)
    assert res.table.set_index('column').role.to_dict() == {'x': 'feature', 'y': 'target', 'pred': 'prediction'}
    res = drift(ref, cur, columns=['x'], target='y')
    assert list(res.table.column) == ['x', 'y']


def test_unknown_types_are_skipped_as_evidently_does():
    rng = np.random.default_rng(6)
    df = pd.DataFrame({'x': rng.normal(size=500), 'when': pd.date_range('2024-01-01', periods=500), 'u': np.arange(500, dtype='uint32')})
    res = drift(df, df)
    assert list(res.table.column) == ['x'] and set(res.skipped) == {'when', 'u'}
    assert_same_as_evidently(df, df)


def test_bad_inputs_are_one_line_errors(tmp_path):
    rng = np.random.default_rng(7)
    df = pd.DataFrame({'a': rng.normal(size=50), 'b': rng.choice(['p', 'q'], 50)})
    cases = [
        (lambda: drift(df, df.drop(columns='b')), r"different columns \(only in reference: b\).*hint: pass columns="),
        (lambda: drift(df, df.assign(c=1)), r"only in current: c"),
        (lambda: drift(df, df.iloc[:0]), r"current data has no rows"),
        (lambda: drift(pd.DataFrame(), df), r"reference data has no rows"),
        (lambda: drift(df, df.assign(a=df.a.astype(str))), r"column 'a' has dtype float64 in the reference but object"),
        (lambda: drift(df.assign(b=1.5), df), r"column 'b' has dtype float64 in the reference but object"),
        (lambda: drift(df, df, target='label'), r"target column 'label' is not in the current data.*hint: its columns are: a, b"),
        (lambda: drift(df, df.assign(a=np.nan)), r"column 'a' has no values in the current data"),
        (lambda: drift(df, tmp_path / 'missing.csv'), r"no such file: .*missing.csv"),
        (lambda: drift(df, 42), r"current data is a int, not a DataFrame"),
        (lambda: drift(df, df, columns=['zz']), r"column 'zz' is not in the reference and current data"),
    ]
    for fn, pat in cases:
        with pytest.raises(DriftInputError, match=pat) as e:
            fn()
        assert '\n' not in str(e.value) and e.value.hint


def test_profile_is_cached_by_content():
    rng = np.random.default_rng(8)
    ref = pd.DataFrame({'a': rng.normal(size=3000), 'b': rng.choice(['p', 'q', 'r'], 3000)})
    p1 = drift_profile(ref)
    assert drift_profile(ref.copy()) is p1  # same content, same profile
    changed = ref.copy(); changed.loc[17, 'a'] += 1e-9
    assert drift_profile(changed) is not p1 and drift_profile(changed).key != p1.key
    summ = p1.summary().set_index('column')
    assert summ.loc['a', 'n'] == 3000 and summ.loc['b', 'top'] in ('p', 'q', 'r')
    assert drift(p1, ref).drifted == []  # a profile is a valid reference


def test_disk_cache_in_a_project_and_file_keys(project, tmp_path):
    rng = np.random.default_rng(9)
    ref = pd.DataFrame({'a': rng.normal(size=4000), 'b': rng.choice(['p', 'q'], 4000)})
    ref.to_csv(project.root / 'ref.csv', index=False)
    ref.to_parquet(project.root / 'ref.parquet')
    res = drift('ref.csv', ref)
    files = list((project.dir / 'cache' / 'drift').glob('*.pkl'))
    assert len(files) == 1 and files[0].name.startswith('file-')
    profile_cache.clear()
    misses = profile_cache.misses
    again = drift('ref.csv', 'ref.parquet')  # the CSV is neither parsed nor profiled again: read from disk
    assert profile_cache.misses == misses and profile_cache.hits == 1
    assert again.table.score.tolist() == pytest.approx(res.table.score.tolist(), abs=1e-12)
    (project.dir / 'cache' / 'drift' / files[0].name).write_bytes(b'damaged')
    profile_cache.clear()
    assert drift('ref.csv', ref).drifted == []  # a damaged cache file is a miss, not an error


def test_dataset_versions(project):
    data = pytest.importorskip('mlnb.data.versions')
    rng = np.random.default_rng(10)
    (project.root / 'data').mkdir()
    pd.DataFrame({'a': rng.normal(size=3000)}).to_csv(project.root / 'data/x.csv', index=False)
    data.add('data/x.csv', tag='v1')
    pd.DataFrame({'a': rng.normal(1, 1, 3000)}).to_csv(project.root / 'data/x.csv', index=False)
    res = drift('data/x.csv@v1', 'data/x.csv')
    assert res.drifted == ['a']


def test_alert_event_log_and_settings(monkeypatch, caplog):
    rng = np.random.default_rng(12)
    ref = pd.DataFrame({f"x{i}": rng.normal(size=3000) for i in range(4)})
    cur = ref.assign(x0=ref.x0 + 1, x1=ref.x1 + 1)
    seen = []
    with events.listening('drift.*', seen.append), caplog.at_level(logging.WARNING, 'mlnb.drift'):
        res = drift(ref, cur)
    assert res.share == 0.5 and res.dataset_drift and res.alert
    kinds = [e.kind for e in seen]
    assert kinds.count('drift.column') == 4 and kinds[-2:] == ['drift.done', 'drift.alert']
    assert 'dataset drift' in caplog.text
    monkeypatch.setenv('MLNB_DRIFT_SHARE', '0.75')
    assert not drift(ref, cur).dataset_drift
    monkeypatch.setenv('MLNB_DRIFT_DISTANCE_THRESHOLD', '5')
    assert drift(ref, cur).drifted == []
    monkeypatch.delenv('MLNB_DRIFT_SHARE'); monkeypatch.delenv('MLNB_DRIFT_DISTANCE_THRESHOLD')
    monkeypatch.setenv('MLNB_DRIFT_ALERT', 'false')
    r = drift(ref, cur)
    assert r.dataset_drift and not r.alert


def test_result_renders():
    rng = np.random.default_rng(13)
    ref = pd.DataFrame({'a': rng.normal(size=200), 'b': rng.choice(['p', 'q', 'r'], 200)})
    res = drift(ref, ref.assign(a=ref.a + 2))
    html = res._repr_html_()
    assert '<table' in html and 'DRIFT' in html and html.index('>a<') < html.index('>b<')  # most drifted first
    assert repr(res).startswith('drift: 1 of 2 columns drifted (share 0.5); dataset drift: YES')
    d = res.to_dict()
    assert json.loads(json.dumps(d, default=str))['drifted'] == ['a']


def test_cli_exit_codes_gate_ci(mlnb_cli, tmp_path):
    rng = np.random.default_rng(14)
    ref = pd.DataFrame({f"x{i}": rng.normal(size=2000) for i in range(4)})
    ref.to_csv(tmp_path / 'ref.csv', index=False)
    ref.assign(x3=rng.normal(size=2000)).to_csv(tmp_path / 'same.csv', index=False)
    ref.assign(x0=ref.x0 + 1, x1=ref.x1 + 1, x2=ref.x2 + 1).to_csv(tmp_path / 'moved.csv', index=False)
    ref.drop(columns='x3').to_csv(tmp_path / 'fewer.csv', index=False)
    ok = mlnb_cli('drift', 'ref.csv', 'same.csv', cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith('drift: 0 of 4 columns drifted')
    bad = mlnb_cli('drift', 'ref.csv', 'moved.csv', '--report', 'ev.html', cwd=tmp_path)
    assert bad.returncode == 1
    assert 'x0' in bad.stdout and 'wasserstein' in bad.stdout
    assert bad.stderr.strip().splitlines()[-1] == ("mlnb: error: dataset drift: 3 of 4 columns drifted (share 0.75); "
                                                   "dataset drift: YES (at share 0.5) (hint: drifted: x0, x1, x2)")
    assert (tmp_path / 'ev.html').stat().st_size > 10000  # Evidently's own report
    loose = mlnb_cli('drift', 'ref.csv', 'moved.csv', '--share', '0.9', cwd=tmp_path)
    assert loose.returncode == 0
    err = mlnb_cli('drift', 'ref.csv', 'fewer.csv', cwd=tmp_path)
    assert err.returncode == 1 and err.stderr.strip() == (
        "mlnb: error: reference and current have different columns (only in reference: x3) "
        "(hint: pass columns=[...] (--columns a,b) to compare the shared ones)")
    assert mlnb_cli('drift', 'ref.csv', 'fewer.csv', '--columns', 'x0,x1', cwd=tmp_path).returncode == 0
    usage = mlnb_cli('drift', 'ref.csv', cwd=tmp_path)
    assert usage.returncode == 2 and 'the following arguments are required: current' in usage.stderr
    assert mlnb_cli('drift', 'ref.csv', 'moved.csv', '--report', cwd=tmp_path).returncode == 2


def test_magic_resolves_notebook_variables(ip, tmp_path):
    rng = np.random.default_rng(15)
    ip.user_ns['ref'] = ref = pd.DataFrame({'a': rng.normal(size=500), 'b': rng.choice(['p', 'q', 'r'], 500)})
    ip.user_ns['cur'] = ref.assign(a=ref.a + 1)
    ref.to_csv(tmp_path / 'ref.csv', index=False)
    ip.user_ns['where'] = str(tmp_path)
    ip.run_cell('res = %mlnb drift ref cur --target b')
    res = ip.user_ns['res']
    assert res.drifted == ['a'] and res.target_drift is False  # the magic does not raise on drift; it returns
    ip.run_cell('res2 = %mlnb drift {where}/ref.csv cur')
    assert ip.user_ns['res2'].drifted == ['a']
    from IPython.core.error import UsageError
    from mlnb.monitor.profiles import DriftInputError
    with pytest.raises(DriftInputError, match="no such file: refx"):
        ip.run_line_magic('mlnb', 'drift refx cur')


# --- explanations and fairness (mlnb.monitor.explanations) ---

def _xy(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({'a': rng.normal(size=n), 'b': rng.normal(size=n), 'c': rng.normal(size=n)})
    return X, 3 * X.a - X.b + rng.normal(0, .1, n)


def test_explain_torch_model_adds_up():
    torch = pytest.importorskip('torch')
    from mlnb.monitor.explanations import explain
    torch.manual_seed(0)
    X, _ = _xy(200)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    ex = explain(net, X, rows=10, n_background=50)
    assert ex.explainer == 'deep'
    with torch.no_grad(): pred = net(torch.tensor(X.iloc[:10].to_numpy(), dtype=torch.float32)).numpy().reshape(10)
    total = ex.values.reshape(10, -1).sum(1) + np.asarray(ex.base_values).reshape(10)
    assert np.abs(total - pred).max() < 1e-5


def test_explain_renders_plots_and_gradient_boosting_adds_up():
    from sklearn.ensemble import GradientBoostingRegressor
    from mlnb.monitor.explanations import explain
    X, y = _xy()
    gb = GradientBoostingRegressor(n_estimators=30, random_state=0).fit(X, y)
    ex = explain(gb, X.iloc[:40])
    assert ex.explainer == 'tree'
    assert np.abs(ex.values.sum(1) + ex.base_values - gb.predict(X.iloc[:40])).max() < 1e-8
    html = ex._repr_html_()
    assert html.count('data:image/png;base64,') == 2 and '>a<' in html
    assert ex.png('waterfall', row=3).startswith(b'\x89PNG')
    assert repr(ex).startswith('explain: tree explainer on GradientBoostingRegressor, 40 rows')


def test_explain_and_fairness_cli(mlnb_cli, tmp_path):
    import joblib
    from sklearn.ensemble import RandomForestRegressor
    X, y = _xy()
    joblib.dump(RandomForestRegressor(n_estimators=10, random_state=0).fit(X, y), tmp_path / 'model.joblib')
    X.to_csv(tmp_path / 'x.csv', index=False)
    r = mlnb_cli('explain', 'model.joblib', 'x.csv', '--rows', '5', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith('explain: tree explainer on RandomForestRegressor, 5 rows') and '\n      a' in r.stdout
    r = mlnb_cli('explain', 'nope.joblib', 'x.csv', cwd=tmp_path)
    assert r.returncode == 2 and 'no model named `nope.joblib`' in r.stderr
    pd.DataFrame({'g': ['a'] * 4 + ['b'] * 4, 'y': [1, 1, 0, 0, 1, 1, 0, 0], 'p': [1, 0, 0, 0, 1, 1, 1, 0]}).to_csv(tmp_path / 'f.csv', index=False)
    r = mlnb_cli('fairness', '-', 'f.csv', '--sensitive', 'g', '--target', 'y', '--prediction', 'p', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith('fairness by g: demographic parity difference 0.5, equalized odds difference 0.5')
    r = mlnb_cli('fairness', '-', 'f.csv', '--sensitive', 'sex', '--target', 'y', '--prediction', 'p', cwd=tmp_path)
    assert r.returncode == 1 and "the sensitive column 'sex' is not in the data" in r.stderr


def test_magic_explain(ip):
    from sklearn.linear_model import Ridge
    X, y = _xy()
    ip.user_ns.update(model=Ridge().fit(X, y), X=X)
    ip.run_cell('ex = %mlnb explain model X --rows 7')
    ex = ip.user_ns['ex']
    assert ex.explainer == 'linear' and ex.values.shape == (7, 3)


def test_drift_and_explain_are_logged_to_the_active_run(project):
    track = pytest.importorskip('mlnb.track.tracking')
    from mlflow.tracking import MlflowClient
    from sklearn.ensemble import RandomForestRegressor
    from mlnb.monitor.explanations import explain
    rng = np.random.default_rng(16)
    ref = pd.DataFrame({'a': rng.normal(size=2000), 'b': rng.normal(size=2000)})
    X, y = _xy()
    with track.run(name='monitoring') as run:
        res = drift(ref, ref.assign(a=ref.a + 1))
        explain(RandomForestRegressor(n_estimators=5, random_state=0).fit(X, y), X, rows=10)
    c = MlflowClient(project.tracking_uri)
    r = c.get_run(run.id)
    assert r.data.metrics['drift_share'] == 0.5 and r.data.metrics['drift_columns'] == 1
    assert r.data.tags['drift.dataset'] == 'yes' and r.data.tags['explain.explainer'] == 'tree'
    assert {a.path for a in c.list_artifacts(run.id, 'drift')} == {'drift/drift.json'}
    assert {a.path for a in c.list_artifacts(run.id, 'explain')} == {'explain/importance.csv', 'explain/shap_bar.png', 'explain/shap_beeswarm.png'}
    saved = json.loads(open(c.download_artifacts(run.id, 'drift/drift.json', str(project.root))).read())
    assert saved['drifted'] == res.drifted == ['a']


# --- model cards (mlnb.monitor.cards) ---

def test_card_holds_every_section_with_the_runs_numbers(project, mlnb_cli):
    track = pytest.importorskip('mlnb.track.tracking')
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression
    from mlnb.monitor.cards import card
    from mlnb.monitor.explanations import explain
    from mlnb.monitor.fair import fairness
    from mlnb.serving.registry import register
    rng = np.random.default_rng(17)
    X = pd.DataFrame({'a': rng.normal(size=400), 'b': rng.normal(size=400)})
    y = (X.a + 0.3 * rng.normal(size=400) > 0).astype(int)
    grp = np.where(rng.random(400) < 0.5, 'f', 'm')
    with track.run(name='train-card', params={'C': 0.5}) as run:
        m = LogisticRegression(C=0.5).fit(X, y)
        acc = float(m.score(X, y))
        run.log({'accuracy': acc, 'accuracy/group_f': float(m.score(X[grp == 'f'], y[grp == 'f']))})
        fr = fairness(m, X.assign(g=grp, y=y), sensitive='g', target='y', features=['a', 'b'])
        dr = drift(X, X.assign(a=X.a + 1))
        ex = explain(m, X, rows=50)
        run.flush()
        mlflow.set_tracking_uri(project.tracking_uri)
        with mlflow.start_run(run_id=run.id):
            info = mlflow.sklearn.log_model(m, name='model', signature=infer_signature(X, m.predict(X)), pip_requirements=['scikit-learn'])
    register(info, 'churn', project=project)
    c = card('churn/1', intended_use='Rank accounts for outreach.')
    md = c.markdown
    assert md.startswith('# Model card: churn version 1')
    for section in ('Model details', 'Intended use', 'Limitations', 'Training data', 'Training procedure and parameters', 'Metrics',
                    'Per slice', 'Fairness', 'Drift', 'Top SHAP features', 'Lineage', 'Registry history'):
        assert f"## {section}" in md or f"### {section}" in md, section
    assert 'Rank accounts for outreach.' in md and '| C | 0.5 |' in md
    assert f"| accuracy | as logged | {acc:.6g} |" in md and '| group_f |' in md  # model quality, with the split it was measured on
    assert f"demographic parity difference {fr.demographic_parity_difference:.6g}" in md
    assert f"{len(dr.drifted)} of 2 columns drifted (share {dr.share:.6g}" in md
    assert f"| {ex.importance.feature[0]} | {ex.importance.mean_abs_shap[0]:.6g} |" in md
    assert '| churn | 1 |' in md and run.id in md
    assert 'mlnb.git' in md or 'mlflow.source.git' in md  # lineage tags recorded by mlnb.track.tracking
    assert '<h2>Registry history</h2>' in c.html
    from mlflow.tracking import MlflowClient
    cl = MlflowClient(project.tracking_uri, registry_uri=project.tracking_uri)
    assert cl.get_model_version('churn', '1').tags['mlnb.card'] == f"runs:/{run.id}/card/card.md"
    assert {a.path for a in cl.list_artifacts(run.id, 'card')} == {'card/card.md', 'card/card.html'}
    # promotion makes the card again (the registry's event); a card that cannot be made is a warning only
    from mlnb.core import emit
    cl.delete_model_version_tag('churn', '1', 'mlnb.card')
    seen = []
    with events.listening('card.*', seen.append):
        emit('registry.promote', model='churn', version=1, alias='champion')
        emit('registry.promote', model='churn', version=9, alias='champion')
    assert cl.get_model_version('churn', '1').tags['mlnb.card'] == f"runs:/{run.id}/card/card.md"
    assert [e.kind for e in seen] == ['card.done', 'card.warning'] and 'version 9 not regenerated' in seen[1].msg
    # the project's own template wins; the CLI writes the card
    (project.root / 'templates').mkdir(exist_ok=True)
    (project.root / 'templates' / 'model_card.md.j2').write_text("# {{ title }}: {{ metrics.accuracy|fmt }}\n")
    r = mlnb_cli('card', 'churn/1', '--out', 'card.html', '--no-log', cwd=project.root)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"# churn version 1: {acc:.6g}" and '<h1>' in (project.root / 'card.html').read_text()
    r = mlnb_cli('card', 'churn/7', cwd=project.root)
    assert r.returncode == 1 and "no run or model version 'churn/7'" in r.stderr


def test_modules_import_nothing_heavy():
    import subprocess, sys
    code = ("import sys, mlnb.monitor.profiles, mlnb.monitor.stattests, mlnb.monitor.datadrift, mlnb.monitor.explanations, mlnb.monitor.fair, mlnb.monitor.cards, mlnb.widgets.monitor\n"
            "print([m for m in ('pandas', 'numpy', 'evidently', 'shap', 'mlflow', 'sklearn', 'ipywidgets', 'torch', 'scipy', 'jinja2') if m in sys.modules])")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == '[]'


def test_served_prediction_log(project):
    predictions = pytest.importorskip('mlnb.track.predictions')
    rng = np.random.default_rng(18)
    train = pd.DataFrame({'a': rng.normal(size=3000), 'b': rng.normal(size=3000)})
    train['prediction'] = (train.a > 0).astype(int)
    with pytest.raises(DriftInputError, match="prediction log is empty"):
        drift(train, 'served')
    log = predictions.PredictionLog(predictions.served_path(project, 'm'))
    live = train.assign(a=train.a + 1)
    log.add([{'id': str(r.Index), 'time': 0.0, 'model': 'm', 'version': 1, 'latency_ms': 1.0,
              'input': {'a': float(r.a), 'b': float(r.b)}, 'output': int(r.a > 0)} for r in live.itertuples()])
    log.close()
    res = drift(train, 'served', prediction='prediction')
    assert res.drifted == ['a', 'prediction'] and res.prediction_drift
    assert drift(train, 'served:m').n_current == 3000


def test_explain_text_pipeline_uses_partition():
    pytest.importorskip('transformers'); pytest.importorskip('tokenizers')
    import torch
    from tokenizers import Tokenizer, models, trainers, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast, pipeline
    from mlnb.monitor.explanations import explain
    torch.manual_seed(0)
    texts = ['a good movie', 'a bad film', 'great acting here', 'terrible plot and bad acting']
    tok = Tokenizer(models.WordLevel(unk_token='[UNK]')); tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=['[UNK]', '[PAD]', '[CLS]', '[SEP]', '[MASK]']))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token='[UNK]', pad_token='[PAD]', cls_token='[CLS]', sep_token='[SEP]', mask_token='[MASK]')
    cfg = BertConfig(vocab_size=fast.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=2)
    pipe = pipeline('text-classification', model=BertForSequenceClassification(cfg), tokenizer=fast, top_k=None, device='cpu')
    ex = explain(pipe, texts[1:], max_evals=30)
    assert ex.explainer == 'partition' and ex.ragged and ex.output == 1
    assert {'bad', 'acting'} <= set(ex.importance.feature)
    assert 'data:image/png' in ex._repr_html_() and ex.png('waterfall', row=2).startswith(b'\x89PNG')
