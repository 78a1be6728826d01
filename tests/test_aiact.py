"""EU AI Act documentation on the model card (issue 22, point 3): a high-risk model's card fails `--check` while a
required field is empty, naming each with what fills it, in one line (API, CLI, magic), and passes once mlnb.toml and
the record fill them; the card shows the section's values. Bad risk categories are refused."""
import hashlib, json, re
import pytest

pytest.importorskip('sklearn'); pytest.importorskip('mlflow'); pytest.importorskip('jinja2'); pytest.importorskip('mistune')

STATED = dict(provider='Acme Lending Ltd, ai@acme.example', intended_purpose='Ranks loan applications for a human underwriter.',
              users='Underwriters at Acme; applicants are the people it is used on.', transparency='Applicants are told a model ranks them.',
              human_oversight='An underwriter decides every case and can override the rank.', limitations='Not for business loans.',
              risk_management='A wrong rank delays a loan; every decision stays with a person.', data_origin='Applications 2020-2024, with consent.',
              data_preparation='Duplicates removed; incomes above the 99.9th percentile capped.', data_gaps='Few applicants over 70.',
              monitoring='The model owner reviews drift and live accuracy weekly.')


def set_card(root, **kv):
    "Set `[card]` keys in the project's mlnb.toml (the lines `mlnb init` wrote); returns their previous values."
    f = root/'mlnb.toml'
    sec, out, old = None, [], {}
    for l in f.read_text().splitlines():
        if l.startswith('['): sec = l.strip('[] ')
        k = l.split('=', 1)[0].strip()
        if sec == 'card' and '=' in l and not l.startswith('#') and k in kv:
            old[k] = json.loads(l.split('=', 1)[1].strip()); l = f"{k} = {json.dumps(kv[k])}"
        out.append(l)
    assert set(old) == set(kv), f"not in [card]: {set(kv) - set(old)}"
    f.write_text('\n'.join(out) + '\n')
    return old


@pytest.fixture(scope='module')
def loans(tmp_path_factory):
    "A project with `loans` v1 (a logistic regression, its training run's lineage holding a DVC hash) as @champion, and its data."
    import mlflow, numpy as np, pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression
    import mlnb
    from mlnb.project import init
    prj = init(tmp_path_factory.mktemp('aiact')/'proj')
    rng = np.random.default_rng(0)
    df = pd.DataFrame({'a': rng.normal(size=120), 'b': rng.normal(size=120), 'group': np.where(rng.random(120) < .5, 'x', 'y')})
    df['target'] = (df.a + .3 * rng.normal(size=120) > 0).astype(int)
    raw = prj.root/'data'/'raw.csv'
    raw.parent.mkdir(exist_ok=True); df.to_csv(raw, index=False)
    md5 = hashlib.md5(raw.read_bytes()).hexdigest()
    (prj.root/'data'/'raw.csv.dvc').write_text(f"outs:\n- md5: {md5}\n  size: {raw.stat().st_size}\n  hash: md5\n  path: raw.csv\n")
    from mlnb.track.store import experiment_id
    prev = mlflow.get_tracking_uri(); mlflow.set_tracking_uri(prj.tracking_uri)
    exp_id = experiment_id(mlflow.MlflowClient(prj.tracking_uri), prj, 'aiact')  # its artifacts in the project, not the working folder
    X, y = df[['a', 'b']], df.target
    with mlflow.start_run(run_name='train', experiment_id=exp_id, tags={'mlnb.dvc.data/raw.csv': md5, 'mlnb.git.commit': 'abc123def4567890'}):
        m = LogisticRegression().fit(X, y)
        mlflow.log_metric('val_accuracy', float(m.score(X, y)))
        info = mlflow.sklearn.log_model(m, name='model', signature=infer_signature(X, m.predict(X)), pip_requirements=['scikit-learn'])
    mlflow.set_tracking_uri(prev)
    v = int(mlnb.register(info, 'loans', project=prj).version)
    mlnb.promote('loans', v, gate=(X, y), project=prj)
    return prj, df, md5, v


def _error_lines(stderr):
    return [l for l in stderr.splitlines() if l.startswith('mlnb: ')]


def test_high_risk_card_fails_check_until_filled(loans, mlnb_cli, ip, capsys, monkeypatch):
    from mlnb.monitor.aiact import CardCheckError
    from mlnb.monitor.cards import card
    prj, df, md5, v = loans
    root = prj.root
    set_card(root, risk='high')

    # the API: one error naming every empty required field and what fills it
    with pytest.raises(CardCheckError) as e:
        card('loans@champion', project=root, log=False, check=True)
    msg = str(e.value)
    assert '\n' not in msg
    assert msg.startswith(f"card check failed for loans/{v} (risk: high): empty required fields "), msg
    for part in ('provider (card.provider)', 'intended purpose (card.intended_purpose)', 'human oversight (card.human_oversight)',
                 'known limitations (card.limitations)', 'data preparation (card.data_preparation)', 'known data gaps (card.data_gaps)',
                 'data sources and versions (card.data_origin)', 'performance per group (`mlnb fairness loans@champion ',
                 'robustness checks (card.robustness)', "post-market monitoring plan (`card.monitoring`, or `mlnb schedule add retrain-loans"):
        assert part in msg, (part, msg)
    for filled in ('risk category (', 'logging capability (', 'performance ('):  # declared, on by default, recorded
        assert filled not in msg, (filled, msg)

    # without --check the card is made anyway, and says what fills each empty field
    md = card('loans@champion', project=root, log=False).markdown
    assert md.index('## Limitations') < md.index('## EU AI Act technical documentation') < md.index('## Training data')
    sec = md.split('## EU AI Act technical documentation\n', 1)[1].split('\n## ', 1)[0]
    assert 'Declared risk category (`card.risk`): **high**; 16 of the 16 fields below are required for it.' in sec
    assert '_Not stated: set `card.human_oversight` in mlnb.toml [card]._' in sec
    assert f"| `data/raw.csv` | `{md5}` |" in sec and 'Origin not stated: set `card.data_origin`' in sec
    assert '_Not recorded: `mlnb fairness loans@champion ' in sec and 'No validation run recorded for this version' in sec
    assert re.search(r"val_accuracy [\d.]+ \(validation\)", sec) and 'accuracy' in sec and 'on the holdout (the promotion gate)' in sec
    assert 'Every served prediction is logged (`serve.log_predictions` on) to `.mlnb/served/loans.jsonl`: none served yet' in sec
    assert re.search(r"hash-chained audit log `\.mlnb/audit\.jsonl` \(\d+ entries", sec), sec

    # the CLI: exit status 1, one line on stderr, no traceback
    r = mlnb_cli('card', 'loans@champion', '--check', '--no-log', cwd=root)
    assert r.returncode == 1, (r.stdout[-500:], r.stderr)
    assert 'Traceback' not in r.stderr and len(_error_lines(r.stderr)) == 1, r.stderr
    assert _error_lines(r.stderr)[0].startswith(f"mlnb: error: card check failed for loans/{v} (risk: high): empty required fields provider (card.provider)")
    # the magic: the same one line, no traceback
    monkeypatch.chdir(root)
    res = ip.run_cell("%mlnb card loans@champion --check --no-log")
    out = capsys.readouterr()
    assert not res.success and 'CardCheckError: card check failed for loans/' in out.out + out.err and 'Traceback' not in out.out + out.err

    # fill what a person states, record fairness and a validation run, schedule a retrain: the check passes
    from mlflow.tracking import MlflowClient
    from mlnb.config import Project
    from mlnb.monitor.fair import fairness
    from mlnb.pipeline.schedule import Schedules
    set_card(root, **STATED)
    fairness('loans@champion', df, sensitive='group', target='target', features=['a', 'b'], project=root)
    c = MlflowClient(prj.tracking_uri)
    train_run = c.get_model_version('loans', str(v)).run_id
    val = c.create_run(c.get_experiment_by_name('aiact').experiment_id, run_name='validate loans',
                       tags={'mlnb.validate': 'passed', 'mlnb.model.name': 'loans', 'mlnb.model.version': str(v), 'validate.data': 'data/raw.csv'})
    c.log_metric(val.info.run_id, 'checks_failed', 0); c.set_terminated(val.info.run_id)
    Schedules(Project(root)).add('retrain-loans', '0 3 * * *', ['mlnb', 'retrain', 'loans', '--trigger', 'drift'])
    crd = card('loans@champion', project=root, log=False, check=True)
    sec = crd.markdown.split('## EU AI Act technical documentation\n', 1)[1].split('\n## ', 1)[0]
    assert '_' + 'Not stated' not in sec and 'Not recorded' not in sec, sec
    for s in STATED.values(): assert s in sec, s
    assert f"| `data/raw.csv` | `{md5}` |" in sec and 'abc123def456 |' in sec
    assert re.search(r"By `group`, 2 groups: .*computed \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC in run `[0-9a-f]{32}` on ", sec), sec
    assert f"in run `{val.info.run_id}` (validate loans): passed, on data/raw.csv; checks_failed 0." in sec
    assert "- scheduled job `retrain-loans` (`0 3 * * *`): `mlnb retrain loans --trigger drift`, retrains when the served data drifted" in sec
    assert '- promotion gate: a challenger replaces the champion only when its accuracy on the holdout' in sec
    assert train_run in crd.markdown

    r = mlnb_cli('card', 'loans@champion', '--check', '--out', 'card.html', '--no-log', cwd=root)
    assert r.returncode == 0 and not _error_lines(r.stderr), r.stderr
    html = (root/'card.html').read_text()
    assert '<h2>EU AI Act technical documentation</h2>' in html and f"<code>{md5}</code>" in html
    assert 'An underwriter decides every case and can override the rank.' in html and '<code>retrain-loans</code>' in html


def test_what_each_risk_category_requires(loans):
    "Undeclared: only the category itself; minimal: nothing more; limited: the purpose and that people are told."
    from mlnb.monitor.aiact import CardCheckError
    from mlnb.monitor.cards import card
    prj, _, _, v = loans
    root = prj.root
    old = set_card(root, risk='', intended_purpose='', intended_use='', transparency='')
    try:
        with pytest.raises(CardCheckError, match=r"\(risk: not declared\): empty required field risk category \(card.risk\) \(hint"):
            card(f"loans/{v}", project=root, log=False, check=True)
        assert '_No risk category declared: set `card.risk` in mlnb.toml [card] to minimal, limited or high._' in card(f"loans/{v}", project=root, log=False).markdown
        set_card(root, risk='minimal')
        md = card(f"loans/{v}", project=root, log=False, check=True).markdown
        assert 'Declared risk category (`card.risk`): **minimal**; 1 of the 16 fields' in md and '_Not stated: set `card.transparency` in mlnb.toml [card]._' in md
        set_card(root, risk='limited')
        with pytest.raises(CardCheckError) as e:
            card(f"loans/{v}", project=root, log=False, check=True)
        assert 'empty required fields intended purpose (card.intended_purpose), users are informed (card.transparency) (hint' in str(e.value)
        set_card(root, intended_use='Ranks loan applications.', transparency='Applicants are told.')  # the card's intended use stands in
        card(f"loans/{v}", project=root, log=False, check=True)
    finally:
        set_card(root, **{k: old.get(k, '') for k in ('risk', 'intended_purpose', 'intended_use', 'transparency')})


def test_bad_risk_categories_are_refused(loans):
    "An unknown category, and `unacceptable` (a prohibited practice), are one-line errors wherever a card is made (the CLI prints them as one line, as the check's above)."
    from mlnb.monitor.aiact import RiskError
    from mlnb.monitor.cards import card
    prj, _, _, v = loans
    root = prj.root
    old = set_card(root, risk='extreme')
    try:
        with pytest.raises(RiskError, match=r"unknown risk category 'extreme' \(card.risk\) \(hint: set card.risk in mlnb.toml \[card\] to one of: minimal, limited, high\)"):
            card(f"loans/{v}", project=root, log=False)
        set_card(root, risk='Unacceptable')
        with pytest.raises(RiskError) as e:
            card(f"loans/{v}", project=root, log=False, check=True)
        assert str(e.value).startswith("risk category 'unacceptable' (card.risk) is a prohibited AI practice (AI Act Article 5)") and '\n' not in str(e.value)
        assert 'no model card documents it into compliance' in str(e.value) and e.value.exit_code == 1
    finally:
        set_card(root, risk=old['risk'])
