"""Registry and audit through the real `mlnb` CLI and MLflow store: the gate refuses a worse model and takes a better one,
rollback restores, every action is audited and tagged, `mlnb audit verify` catches edits and removals."""
import json, os, subprocess, sys, warnings
from pathlib import Path
import pytest

warnings.filterwarnings('ignore')
CLI = [sys.executable, '-c', 'import sys; from mlnb.cli import main; sys.exit(main())']


def mlnb(*args, cwd, env=None, timeout=300):
    "Run `mlnb ARGS...` in `cwd`; returns the CompletedProcess."
    e = {**os.environ, 'DVC_NO_ANALYTICS': '1', **(env or {})}
    e.pop('MLNB_PROJECT', None)
    return subprocess.run([*CLI, *map(str, args)], cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope='module')
def reg(tmp_path_factory):
    "A project with `cancer` versions 1 (naive Bayes), 2 (constant dummy), 3 (logistic regression) and a holdout CSV."
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.datasets import load_breast_cancer
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.naive_bayes import GaussianNB
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from mlnb.project import init
    from mlnb.serving.registry import register
    prj = init(tmp_path_factory.mktemp('reg')/'p')
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0)
    mlflow.set_tracking_uri(prj.tracking_uri)
    infos = []
    for m in (GaussianNB(), DummyClassifier(), make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))):
        with mlflow.start_run() as run:
            m.fit(Xtr, ytr); mlflow.log_metric('train_acc', m.score(Xtr, ytr))
            infos.append(mlflow.sklearn.log_model(m, name='model', signature=infer_signature(Xtr, m.predict(Xtr)),
                                                  pip_requirements=['scikit-learn']))
    register(infos[0], 'cancer', project=prj)               # by ModelInfo
    register(infos[1].run_id, 'cancer', project=prj)        # by run id
    r = mlnb('register', infos[2].model_uri, 'cancer', cwd=prj.root)  # by URI, through the CLI
    assert r.returncode == 0, r.stderr
    assert 'registered cancer version 3' in r.stdout
    Xte.assign(target=yte).to_csv(prj.root/'holdout.csv', index=False)
    return prj, infos, (Xte, yte)


def champion(prj):
    from mlnb.serving.registry import registry_client
    return int(registry_client(prj).get_model_version_by_alias('cancer', 'champion').version)


def test_gate_promote_refuse_rollback_and_audit(reg):
    prj, infos, _ = reg
    root = prj.root
    r = mlnb('promote', 'cancer', '1', '--holdout', 'holdout.csv', cwd=root)
    assert r.returncode == 0, r.stderr
    assert 'PROMOTED' in r.stdout and 'had no holder' in r.stdout
    # the holdout from the setting (environment override) this time; the dummy loses and is refused with the comparison
    env = {'MLNB_REGISTRY_HOLDOUT': 'holdout.csv', 'MLNB_REGISTRY_MIN_IMPROVEMENT': '0.01'}
    r = mlnb('promote', 'cancer', '2', cwd=root, env=env)
    assert r.returncode == 1
    assert 'not promoted to @champion' in r.stderr and 'accuracy=' in r.stderr and 'vs @champion v1' in r.stderr, r.stderr
    assert champion(prj) == 1
    r = mlnb('promote', 'cancer', '3', '--reason', 'better on holdout', cwd=root, env=env)
    assert r.returncode == 0, r.stderr
    assert champion(prj) == 3
    out = mlnb('registry', 'cancer', cwd=root).stdout
    rows = [l.split() for l in out.splitlines()[1:]]
    assert [row[1] for row in rows] == ['1', '2', '3'] and 'champion' in rows[2][2], out
    assert 'accuracy=' in out and 'train_acc=' not in out  # model metrics only: train_acc is a training curve (issue 19, point 5)
    assert 'train_acc=' in mlnb('registry', 'cancer', '--metrics', 'curve', cwd=root).stdout
    r = mlnb('rollback', 'cancer', cwd=root)
    assert r.returncode == 0 and 'version 1' in r.stdout, r.stderr
    assert champion(prj) == 1
    r = mlnb('rollback', 'cancer', cwd=root)
    assert r.returncode == 1 and 'no previous version' in r.stderr
    # the audit trail: every action, in order, tagged on the versions, and verifiable
    from mlnb.audit import audit_log
    from mlnb.serving.registry import registry_client
    es = audit_log(prj).entries()
    assert [e['action'] for e in es] == ['register'] * 3 + ['promote', 'promote.refused', 'promote', 'rollback']
    assert es[5]['reason'] == 'better on holdout' and es[5]['previous'] == 1 and es[5]['score'] > es[5]['previous_score']
    assert es[4]['score'] < es[4]['previous_score']
    tags = registry_client(prj).get_model_version('cancer', '3').tags
    audit_tags = sorted(k for k in tags if k.startswith('mlnb.audit.'))
    assert [json.loads(tags[k])['action'] for k in audit_tags] == ['register', 'promote']
    assert json.loads(tags[audit_tags[1]])['hash'] == es[5]['hash'][:16]
    r = mlnb('audit', 'verify', cwd=root)
    assert r.returncode == 0 and '7 entries, hash chain intact' in r.stdout, r.stdout + r.stderr
    r = mlnb('audit', 'show', '--model', 'cancer', '--last', '2', cwd=root)
    assert r.returncode == 0 and 'promote' in r.stdout and 'rollback' in r.stdout


def test_audit_verify_detects_edit_and_removal(reg):
    prj, *_ = reg
    from mlnb.audit import audit_log
    log = audit_log(prj)
    if not log.entries(): log.append('register', model='cancer', version=1)
    log.append('approve', model='cancer', version=1, by='reviewer')
    good = log.path.read_text()
    lines = good.splitlines(keepends=True)
    try:
        log.path.write_text(good.replace('"reviewer"', '"someone else"'))
        r = mlnb('audit', 'verify', cwd=prj.root)
        assert r.returncode == 1 and 'was changed' in r.stderr, r.stderr
        log.path.write_text(''.join(lines[:1] + lines[2:]))
        r = mlnb('audit', 'verify', cwd=prj.root)
        assert r.returncode == 1 and 'does not follow' in r.stderr, r.stderr
        log.path.write_text(''.join(lines[:-1]))
        r = mlnb('audit', 'verify', cwd=prj.root)
        assert r.returncode == 1 and 'removed from the end' in r.stderr, r.stderr
    finally:
        log.path.write_text(good)
    assert mlnb('audit', 'verify', cwd=prj.root).returncode == 0


def test_audit_appends_from_many_processes(tmp_path):
    "Four processes appending at once leave one unbroken chain with every entry."
    log = tmp_path/'audit.jsonl'
    code = ("import sys; from mlnb.audit import AuditLog\n"
            "for i in range(25): AuditLog(sys.argv[1]).append('retrain', worker=sys.argv[2], i=i)")
    ps = [subprocess.Popen([sys.executable, '-c', code, str(log), str(w)]) for w in range(4)]
    assert all(p.wait(120) == 0 for p in ps)
    from mlnb.audit import AuditLog
    rep = AuditLog(log).verify()
    assert rep.ok and rep.entries == 100, rep
    assert sorted((e['worker'], e['i']) for e in AuditLog(log).entries()) == sorted((str(w), i) for w in range(4) for i in range(25))


def test_bad_input(reg):
    prj, infos, _ = reg
    root = prj.root
    r = mlnb('promote', 'cancr', '1', '--no-gate', cwd=root)
    assert r.returncode == 1 and "no registered model 'cancr'" in r.stderr and "did you mean 'cancer'" in r.stderr
    r = mlnb('promote', 'cancer', '99', '--no-gate', cwd=root)
    assert r.returncode == 1 and 'no version 99' in r.stderr
    r = mlnb('promote', 'cancer', cwd=root)
    assert r.returncode == 2 and 'required' in r.stderr
    r = mlnb('promote', 'cancer', '3', cwd=root)  # no holdout anywhere
    assert r.returncode == 2 and 'no holdout' in r.stderr
    r = mlnb('promote', 'cancer', '3', '--holdout', 'holdout.csv', '--metric', 'auc', cwd=root)
    assert r.returncode == 2 and 'unknown gate metric' in r.stderr
    r = mlnb('promote', 'cancer', '3', '--holdout', 'nope.csv', cwd=root)
    assert r.returncode == 1 and 'no such file: nope.csv' in r.stderr
    r = mlnb('promote', 'cancer', '3', '--holdout', 'holdout.csv', '--target', 'label', cwd=root)
    assert r.returncode == 2 and "no target column 'label'" in r.stderr
    r = mlnb('register', 'not-a-run', 'cancer', cwd=root)
    assert r.returncode == 1 and "no run or model 'not-a-run'" in r.stderr
    r = mlnb('rollback', 'cancer', '--alias', 'staging', cwd=root)
    assert r.returncode == 1 and 'no previous version' in r.stderr
    r = mlnb('audit', cwd=root)
    assert r.returncode == 2
    r = mlnb('registry', cwd=root.parent)  # outside the project
    assert r.returncode == 1 and 'no mlnb project' in r.stderr


def test_challenger_alias_and_python_api(reg):
    "Any alias works and keeps its own history; `mlnb.promote` takes a `Gate` and returns the comparison."
    import mlnb
    prj, infos, (Xte, yte) = reg
    c = mlnb.promote('cancer', 2, alias='challenger', gate=False, project=prj)
    assert c.promoted and not c.gated
    c = mlnb.promote('cancer', '@challenger', alias='shadow', gate=mlnb.Gate(Xte, yte, metric='f1'), project=prj)
    assert c.promoted and c.metric == 'f1' and c.candidate == 2
    rows = {r['version']: r['aliases'] for r in mlnb.list_models('cancer', project=prj)}
    assert 'challenger' in rows[2] and 'shadow' in rows[2]
    assert '<table' in mlnb.list_models(project=prj)._repr_html_()


def test_registry_widget_confirms_before_acting(reg, monkeypatch):
    """The `%mlnb registry` view on the real registry: Promote and Rollback change nothing until Confirm (the human in the
    loop); Cancel leaves the registry and the audit log as they were; a confirmed action is gated and audited."""
    pytest.importorskip('ipywidgets')
    from types import SimpleNamespace
    from mlnb.audit import audit_log
    from mlnb.serving.registry import registry_client, list_models
    from mlnb.widgets.registry import make_view
    prj, _, _ = reg
    monkeypatch.chdir(prj.root); monkeypatch.setenv('MLNB_REGISTRY_HOLDOUT', 'holdout.csv')
    def widget_alias():
        try: return int(registry_client(prj).get_model_version_by_alias('cancer', 'widget').version)
        except Exception: return None
    audited = lambda: [e['action'] for e in audit_log(prj).entries()]
    v = make_view(SimpleNamespace(name='cancer'), None)
    v.finish(list_models('cancer'))
    assert v.model.value == 'cancer' and [int(x) for x in v.version.options] == [1, 2, 3]
    pick = lambda ver: setattr(v.version, 'value', next(x for x in v.version.options if int(x) == ver))
    v.alias.value = 'widget'; pick(1)
    n = len(audited())
    v.promote_b.click()                                   # asks, does not act
    assert v.confirm_box.layout.display == 'flex' and 'Promote cancer v1 to @widget' in v.question.value
    assert widget_alias() is None and len(audited()) == n
    v.cancel_b.click()                                    # cancelled: nothing happened
    assert v.confirm_box.layout.display == 'none' and 'cancelled' in v.status.value
    assert widget_alias() is None and len(audited()) == n
    v.confirm_b.click()                                   # a stray Confirm with nothing pending does nothing
    assert widget_alias() is None and len(audited()) == n
    v.promote_b.click(); v.confirm_b.click()              # confirmed: promoted through the gate
    assert widget_alias() == 1 and '✔' in v.status.value and audited()[n:] == ['promote']
    pick(3); v.promote_b.click()
    assert widget_alias() == 1
    v.confirm_b.click()                                   # the logistic regression beats naive Bayes on the holdout
    assert widget_alias() == 3 and audited()[n:] == ['promote', 'promote']
    v.rollback_b.click()
    assert 'Roll cancer @widget back' in v.question.value and widget_alias() == 3 and len(audited()) == n + 2
    v.confirm_b.click()
    assert widget_alias() == 1 and 'version 1' in v.status.value and audited()[n:] == ['promote', 'promote', 'rollback']
    pick(2); v.promote_b.click(); v.confirm_b.click()     # the constant dummy loses: refused, shown, audited, nothing moved
    assert widget_alias() == 1 and '✘' in v.status.value and audited()[-1] == 'promote.refused'
    assert audit_log(prj).verify().ok
