"""Continuous training end to end on the classification template: promote a better challenger, keep the champion
when worse, stop before training when the data gate fails, leave a winner pending approval."""
import json, os, subprocess, sys
from pathlib import Path
import pandas as pd
import pytest

@pytest.fixture(scope='module')
def tproject(tmp_path_factory):
    "A template project whose first champion is deliberately weak (C tiny)."
    root = tmp_path_factory.mktemp('rt')/'proj'
    env = {**os.environ, 'DVC_NO_ANALYTICS': '1'}
    def mlnb(*args):
        return subprocess.run([sys.executable, '-m', 'mlnb.cli', *map(str, args)], cwd=root if root.exists() else root.parent,
                              env=env, capture_output=True, text=True, timeout=900)
    r = mlnb('init', root, '--template', 'classification')
    assert r.returncode == 0, r.stderr
    r = mlnb('run', '--set', 'train.C=0.0003', '--set', 'evaluate.min_accuracy=0.5')
    assert r.returncode == 0, r.stderr
    return root, mlnb

def champion(root):
    from mlflow import MlflowClient
    return int(MlflowClient(f"sqlite:///{root}/.mlnb/mlflow.db").get_model_version_by_alias('classifier', 'champion').version)

def audit_actions(root):
    return [json.loads(l)['action'] for l in (root/'.mlnb'/'audit.jsonl').read_text().splitlines()]

def test_retrain_loop(tproject):
    root, mlnb = tproject
    assert champion(root) == 1
    # bad data: a column missing and nulls -> refused before training, champion untouched
    raw = pd.read_csv(root/'data'/'raw.csv')
    bad = raw.drop(columns=['mean_radius']).copy(); bad.loc[:50, 'mean_texture'] = None
    bad.to_csv(root/'bad.csv', index=False)
    runs_before = len(list((root/'.mlnb'/'runs').glob('*-train.ipynb')))
    r = mlnb('retrain', 'classifier', '--data', 'bad.csv')
    assert r.returncode == 1 and 'quality gate' in r.stderr and 'mean_radius' in r.stderr
    assert 'Traceback' not in r.stderr and '--no-gate' in r.stderr  # one line and a hint (issue 19, point 9)
    assert len(list((root/'.mlnb'/'runs').glob('*-train.ipynb'))) == runs_before and champion(root) == 1
    assert pd.read_csv(root/'data'/'raw.csv').shape == raw.shape  # the raw table was not replaced
    # a better challenger (C back to 1.0) is promoted, and the report says so
    params = (root/'params.yaml').read_text().replace('C: 0.0003', 'C: 1.0')
    (root/'params.yaml').write_text(params)
    r = mlnb('retrain', 'classifier')
    assert r.returncode == 0, r.stderr
    assert 'retrain classifier: promoted' in r.stdout and champion(root) == 2
    report = Path(r.stdout.strip().splitlines()[-1].split()[-1])
    assert report.exists() and 'promoted' in report.read_text()
    # the report people read (issue 19, point 8): champion vs challenger (table and chart), the rule, the gate, the cost
    page, md = report.read_text(), report.with_suffix('.md').read_text()
    for s in ("<meta charset='utf-8'>", 'mlnb-compare', 'champion v1', 'challenger v2', 'by at least', 'Data quality gate',
              'passed the quality gate', 'CPU-s', 'peak memory', 'not estimated: set retrain.price_per_hour', 'mlnb-cost-trend'):
        assert s in page, s
    assert '## Champion vs challenger' in md and '| challenger v2 |' in md and '## Cost' in md
    from mlflow import MlflowClient
    c = MlflowClient(f"sqlite:///{root}/.mlnb/mlflow.db")
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()], "tags.`mlnb.retrain` = 'classifier'", order_by=['attributes.start_time DESC'])
    assert len(runs) == 2 and runs[0].data.tags['mlnb.retrain.decision'] == 'promoted' and runs[1].data.tags['mlnb.retrain.decision'] == 'refused-data'
    assert runs[0].data.metrics['cost/cpu_s'] > 0 and runs[0].data.metrics['cost/wall_s'] > 0 and 'cost/money' not in runs[0].data.metrics
    assert {a.path for a in c.list_artifacts(runs[0].info.run_id, 'report')} == {f"report/{report.name}", f"report/{report.with_suffix('.md').name}"}
    # a worse one is registered as challenger but the champion stays
    (root/'params.yaml').write_text(params.replace('C: 1.0', 'C: 0.0001'))
    r = mlnb('retrain', 'classifier')
    assert r.returncode == 0, r.stderr
    assert 'retrain classifier: kept' in r.stdout and champion(root) == 2
    # nothing changed: no new version
    r = mlnb('retrain', 'classifier')
    assert r.returncode == 0 and 'retrain classifier: unchanged' in r.stdout
    # --no-gate: explicit, audited, tagged on the run
    r = mlnb('retrain', 'classifier', '--no-gate')
    assert r.returncode == 0 and 'retrain classifier: unchanged' in r.stdout
    assert 'gate.skipped' in audit_actions(root)
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()], "tags.`mlnb.retrain` = 'classifier'", order_by=['attributes.start_time DESC'], max_results=1)
    assert runs[0].data.tags['mlnb.gate'] == 'skipped'
    # a winner with --require-approval waits for a person
    (root/'params.yaml').write_text(params.replace('C: 1.0', 'C: 3.0'))
    r = mlnb('retrain', 'classifier', '--require-approval')
    assert r.returncode == 0, r.stderr
    if 'pending' in r.stdout:
        v = int(r.stdout.split('`mlnb approve classifier ')[1].split('`')[0])
        assert champion(root) == 2
        r = mlnb('approve', 'classifier', v)
        assert r.returncode == 0, r.stderr
        assert champion(root) == v
    else:
        assert 'kept' in r.stdout  # C=3 did not beat C=1 on this holdout: still a valid outcome of the gate
    acts = audit_actions(root)
    for a in ('retrain.start', 'retrain.refused-data', 'retrain.promoted', 'retrain.kept', 'promote'): assert a in acts, acts
    r = mlnb('audit', 'verify')
    assert r.returncode == 0, r.stderr

def test_template_register_step_audits_challenger_with_a_card_and_train_run_nests(tproject):
    """The template's register step moves @challenger through `mlnb.promote` (audited, the version's card made), and
    the `train` run of its pipeline is a child of its `step train` run, naming the notebook and its executed copy."""
    from mlflow import MlflowClient
    root, mlnb = tproject
    c = MlflowClient(f"sqlite:///{root}/.mlnb/mlflow.db")
    train = c.get_run(c.get_model_version('classifier', '1').run_id)  # the fixture's `mlnb run`: its kernels are pooled
    step = c.get_run(train.data.tags['mlflow.parentRunId'])
    assert (train.info.run_name, step.info.run_name) == ('train', 'step train')
    for t in (train.data.tags, step.data.tags):
        assert t['mlnb.notebook'] == t['mlflow.source.name'] == 'nbs/train.ipynb' and t['mlflow.source.type'] == 'NOTEBOOK'
        assert t['mlnb.notebook.executed'].startswith(f"runs:/{step.info.run_id}/notebooks/") and t['mlnb.git.commit']
    # the register step, once more: a new version becomes @challenger, the champion stays
    before = champion(root)
    r = mlnb('step', 'nbs/register.ipynb', '--params-from', 'params.yaml:register')
    assert r.returncode == 0, r.stderr
    v = json.loads((root/'outputs'/'registered.json').read_text())['version']
    assert int(c.get_model_version_by_alias('classifier', 'challenger').version) == v and champion(root) == before
    entries = [json.loads(l) for l in (root/'.mlnb'/'audit.jsonl').read_text().splitlines()]
    assert any(e['action'] == 'promote' and e.get('alias') == 'challenger' and e['version'] == v for e in entries), entries[-3:]
    card = root/'.mlnb'/'cards'/'classifier@challenger.html'
    assert f"classifier version {v}" in card.read_text()
    assert mlnb('audit', 'verify').returncode == 0
