"""The closed loop, end to end, with a running server: the classification template's weak champion is served; traffic
like the training data triggers nothing; drifted traffic makes `retrain --if-drift` run the pipeline, the data gate,
the comparison and the promotion; the running server hot-swaps to the new champion without a failed request; the
champion's card is remade and names it; `--if-new-data` with unchanged data does nothing; `approve` refuses a version
that no retrain left pending."""
import json, os, subprocess, sys, threading, time
from pathlib import Path
import pytest

httpx = pytest.importorskip('httpx')
from test_serving import free_port, server  # the same real `mlnb serve` subprocess as the serving tests


def _env():
    e = {**os.environ, 'DVC_NO_ANALYTICS': '1'}
    e.pop('MLNB_PROJECT', None)
    return e


@pytest.fixture(scope='module')
def loop(tmp_path_factory):
    "A template project whose first champion (v1) is deliberately weak (C tiny)."
    root = tmp_path_factory.mktemp('loop')/'proj'
    def mlnb(*args, timeout=900):
        return subprocess.run([sys.executable, '-m', 'mlnb.cli', *map(str, args)], cwd=root if root.exists() else root.parent,
                              env=_env(), capture_output=True, text=True, timeout=timeout)
    r = mlnb('init', root, '--template', 'classification')
    assert r.returncode == 0, r.stderr
    r = mlnb('run', '--set', 'train.C=0.0003', '--set', 'evaluate.min_accuracy=0.5')
    assert r.returncode == 0, r.stderr
    from mlnb.config import find_project
    return find_project(root), mlnb


def _champion(root):
    from mlflow import MlflowClient
    return int(MlflowClient(f"sqlite:///{root}/.mlnb/mlflow.db").get_model_version_by_alias('classifier', 'champion').version)


def _audit(root):
    return [json.loads(l) for l in (root/'.mlnb'/'audit.jsonl').read_text().splitlines()]


@pytest.mark.timeout(1800)  # a template project, a server, three retrains: minutes, more on a busy machine
def test_closed_loop_with_a_running_server(loop):
    import pandas as pd
    prj, mlnb = loop
    root = prj.root
    assert _champion(root) == 1
    X = pd.read_csv(root/'data'/'prepared'/'holdout.csv').drop(columns=['target'])
    with server(prj, 'classifier@champion', '--poll-s', '0.2') as url:
        with httpx.Client(base_url=url, timeout=30) as c:
            # traffic like the training data: no drift, nothing retrained
            for i in range(0, 60, 20):
                r = c.post('/predict', json=X.iloc[i:i + 20].to_dict('records'))
                assert r.status_code == 200 and r.json()['version'] == 1
            time.sleep(0.6)  # the prediction log is appended every 0.2 s
            r = mlnb('retrain', 'classifier', '--if-drift')
            assert r.returncode == 0, r.stderr
            assert 'retrain classifier: no-trigger' in r.stdout and 'no drift' in r.stdout, r.stdout
            # --if-new-data with the raw table unchanged since its version: nothing either
            r = mlnb('retrain', 'classifier', '--if-new-data')
            assert r.returncode == 0, r.stderr
            assert 'retrain classifier: no-trigger' in r.stdout and 'unchanged' in r.stdout, r.stdout
            assert _champion(root) == 1
            # drifted traffic: every feature shifted far from what the model was trained on
            shifted = X * 3 + X.std() * 2
            for i in range(0, 120, 20):
                r = c.post('/predict', json=shifted.iloc[i % len(shifted):i % len(shifted) + 20].to_dict('records'))
                assert r.status_code == 200
            time.sleep(0.6)
            # a better training configuration is committed; the drift triggers the retrain, which promotes it
            (root/'params.yaml').write_text((root/'params.yaml').read_text().replace('C: 0.0003', 'C: 1.0'))
            stop, answers = threading.Event(), []
            def client():  # traffic through the whole retrain and swap: not one failed request
                with httpx.Client(base_url=url, timeout=30) as cc:
                    i = 0
                    while not stop.is_set():
                        r = cc.post('/predict', json=X.iloc[i % len(X)].to_dict())
                        answers.append((r.status_code, r.json().get('version') if r.status_code == 200 else r.text))
                        i += 1; time.sleep(0.02)
            t = threading.Thread(target=client); t.start()
            try:
                r = mlnb('retrain', 'classifier', '--if-drift')
                assert r.returncode == 0, r.stderr
                assert 'served data drifted' in r.stdout and 'retrain classifier: promoted' in r.stdout, r.stdout
                assert 'quality gate' in r.stdout  # the data gate ran before the pipeline
                assert _champion(root) == 2
                t0 = time.time()
                while not any(v == 2 for _, v in answers[-5:]):
                    assert time.time() - t0 < 30, 'the running server did not swap to the new champion'
                    time.sleep(0.1)
            finally:
                stop.set(); t.join()
            bad = [a for a in answers if a[0] != 200]
            assert not bad, bad[:5]
            assert answers[0][1] == 1 and answers[-1][1] == 2
            assert c.get('/model').json()['version'] == 2
    # the new champion's card was remade by the promotion and names it; the old one's card no longer says champion
    card = (root/'.mlnb'/'cards'/'classifier.html').read_text()
    assert 'classifier version 2' in card and '@champion' in card
    assert 'classifier version 1' not in card.split('Registry history')[0]
    acts = [e['action'] for e in _audit(root)]
    assert 'retrain.no-trigger' in acts and 'retrain.promoted' in acts and acts.count('promote') >= 2, acts
    r = mlnb('audit', 'verify')
    assert r.returncode == 0, r.stderr


def test_approve_refuses_a_version_not_pending(loop):
    prj, mlnb = loop
    root = prj.root
    before = _champion(root)
    for v in (1, before, 99):  # an old version, the champion itself, one that does not exist
        r = mlnb('approve', 'classifier', v)
        assert r.returncode == 1, (v, r.stdout, r.stderr)
        err = r.stderr.strip().splitlines()
        assert len(err) <= 2 and 'not pending' in r.stderr and 'Traceback' not in r.stderr, r.stderr
        assert _champion(root) == before
    assert not any(e['action'] == 'promote' and e.get('reason') == 'approved by a person' for e in _audit(root))
