"""One data resolver (issue 18, rule 4): every verb that takes data accepts the same forms — a table file (CSV, TSV,
Parquet, JSON lines), a table at a version (`PATH@REV`, DVC), the prediction log (`served:NAME`) — and gives the same
error for a bad one. A table of verbs x forms, run through the verbs' own parser (`run_verb`, the CLI's and the magic's)."""
import numpy as np, pandas as pd, pytest
from mlnb.core import DataError, VerbContext, run_verb

FILES = ['t.csv', 't.tsv', 't.parquet', 't.jsonl']

@pytest.fixture(scope='module')
def forms(tmp_path_factory):
    "A project holding one 40-row table in every form; returns (project root, the table)."
    import os
    from mlnb.project import init
    from mlnb.data.versions import add
    from mlnb.track.predictions import PredictionLog, served_path
    root = tmp_path_factory.mktemp('refs')/'proj'
    prj = init(root)
    old = os.getcwd(); os.chdir(root)
    try:
        rng = np.random.default_rng(0)
        df = pd.DataFrame({'a': rng.normal(size=40), 'b': rng.normal(size=40)})
        df['y'] = (df.a + df.b > 0).astype(int)
        df.to_csv('t.csv', index=False); df.to_csv('t.tsv', sep='\t', index=False)
        df.to_parquet('t.parquet'); df.to_json('t.jsonl', orient='records', lines=True)
        (root/'data').mkdir(exist_ok=True); df.to_csv('data/v.csv', index=False)
        add('data/v.csv', tag='v1')
        log = PredictionLog(served_path(prj, 'm'))
        log.add([dict(id=str(r.Index), time=0.0, model='m', version='1', latency_ms=1.0, input=dict(a=r.a, b=r.b), output=int(r.y)) for r in df.itertuples()])
        log.close()
        (root/'notes.txt').write_text('not a table')
        (root/'folder').mkdir()
    finally: os.chdir(old)
    return root, df

@pytest.fixture
def here(forms, monkeypatch):
    monkeypatch.chdir(forms[0])
    return forms

def _ctx(**ns): return VerbContext(namespace=ns)

@pytest.mark.parametrize('form', FILES + ['data/v.csv@v1', 'served:m'])
def test_drift_reads_every_form(here, form):
    res = run_verb(['drift', 't.csv', form, '--columns', 'a,b'])
    assert res.drifted == [] and sorted(res.table.column) == ['a', 'b'] and res.n_current == 40  # the same 40 rows, whatever the form

@pytest.mark.parametrize('form', FILES + ['data/v.csv@v1'])
def test_train_and_explain_read_every_form(here, form):
    from sklearn.linear_model import LogisticRegression
    ctx = _ctx(clf=LogisticRegression())
    res = run_verb(['train', 'clf', '--data', form, '--target', 'y'], ctx)
    assert res.metrics['train_accuracy'] > 0.8
    ex = run_verb(['explain', 'clf', form, '--rows', '5'], _ctx(clf=_fit_on(here[1])))
    assert ex.values.shape[0] == 5

def _fit_on(df):
    from sklearn.linear_model import LogisticRegression
    return LogisticRegression().fit(df[['a', 'b', 'y']], df.y)  # explain takes the table's columns as they are

BAD = [('missing.csv', r"no such file: missing\.csv"), ('notes.txt', r"cannot read .*notes\.txt: not a table file"),
       ('folder', r"folder is a folder, not a table"), ('data/v.csv@v9', r"unknown tag or rev 'v9'")]

def _verbs(bad):
    "Every verb that takes data, given `bad` where the data goes."
    return [['drift', 't.csv', bad], ['drift', bad, 't.csv'], ['explain', 'clf', bad], ['fairness', '-', bad, '--sensitive', 'a', '--target', 'y', '--prediction', 'y'],
            ['train', 'clf', '--data', bad, '--target', 'y'], ['train', 'clf', '--data', 't.csv', '--val', bad, '--target', 'y'],
            ['predict', 'nomodel', bad, '--out', 'o.csv']]

@pytest.mark.parametrize('bad,msg', BAD)
def test_every_verb_gives_the_same_error_for_a_bad_form(here, bad, msg):
    from sklearn.linear_model import LogisticRegression
    hints = set()
    for argv in _verbs(bad):
        if argv[0] == 'predict' and bad == 'folder': continue  # a folder of tables is a form `predict` takes
        with pytest.raises(DataError, match=msg) as e:
            run_verb(argv, _ctx(clf=LogisticRegression()))
        assert e.value.hint, argv
        hints.add(e.value.hint)
    assert len(hints) == 1, hints  # one hint, naming every form, whichever verb was given the bad data
    if '@' not in bad:
        hint = hints.pop()
        for form in ('.csv', '.tsv', '.parquet', '.jsonl', 'PATH@REV', 'served:NAME'): assert form in hint, hint

def test_the_cli_exits_1_with_one_line(here, mlnb_cli):
    root, _ = here
    outs = [mlnb_cli(*argv, cwd=root) for argv in (['drift', 't.csv', 'missing.csv'], ['predict', 'nomodel', 'missing.csv', '--out', 'o.csv'])]
    for r in outs:
        assert r.returncode == 1 and r.stderr.startswith('mlnb: error: no such file: missing.csv (hint: give a .csv'), r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and 'Traceback' not in r.stderr
