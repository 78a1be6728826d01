"""Integration tests of tracking (issue 3): `%%mlnb track` in a real IPython shell, the fast logger under a locked store
and a `kill -9`, `mlnb sync`/`mlnb runs` on the CLI, MLflow's own `search_runs`, and a real `mlflow server` on loopback."""
import json, os, signal, socket, sqlite3, subprocess, sys, textwrap, threading, time
from pathlib import Path
import pytest

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope='module')
def prj(tmp_path_factory):
    from mlnb.project import init
    return init(tmp_path_factory.mktemp('track') / 'proj')


@pytest.fixture
def in_prj(prj, monkeypatch):
    monkeypatch.chdir(prj.root)
    monkeypatch.setenv('MLNB_TRACKING_SYSTEM_INTERVAL', '0')
    return prj


def client(prj):
    from mlnb.track.store import mlflow_client
    return mlflow_client(prj.tracking_uri)


def exp_runs(prj, name):
    c = client(prj)
    e = c.get_experiment_by_name(name)
    return [] if e is None else c.search_runs([e.experiment_id], order_by=['attributes.start_time ASC'])


def mlnb_cli(*args, cwd, env=None, check=True):
    r = subprocess.run(['mlnb', *args], cwd=cwd, capture_output=True,
                       text=True, env={**os.environ, **(env or {})}, timeout=300)
    if check: assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r


# ---------------------------------------------------------------- the cell magic in a real IPython shell
def test_track_cell_magic_in_ipython(in_prj):
    from IPython.core.interactiveshell import InteractiveShell
    ip = InteractiveShell.instance()
    assert ip.run_cell('%load_ext mlnb').success
    ip.run_cell('lr = 0.05\nepochs = 3')
    cell = "%%mlnb track --experiment cellexp --params lr,epochs --tags team=cv\nimport mlnb\nfor e in range(epochs): mlnb.log(loss=lr/(e+1))\n"
    r1, r2 = ip.run_cell(cell), ip.run_cell(cell)   # the same cell run twice
    assert r1.success and r2.success
    runs = exp_runs(in_prj, 'cellexp')
    assert [r.info.status for r in runs] == ['FINISHED', 'FINISHED']
    assert runs[0].info.run_id != runs[1].info.run_id
    assert runs[0].data.params == {'lr': '0.05', 'epochs': '3'} and runs[0].data.tags['team'] == 'cv'
    assert len(client(in_prj).get_metric_history(runs[0].info.run_id, 'loss')) == 3

    # --resume reopens a run instead of starting one: metrics without a step go on from its last step
    rid = runs[0].info.run_id
    assert ip.run_cell(f"%%mlnb track --resume {rid[:8]}\nmlnb.log(loss=0.0)\n").success
    assert len(exp_runs(in_prj, 'cellexp')) == 2
    assert sorted(m.step for m in client(in_prj).get_metric_history(rid, 'loss')) == [0, 1, 2, 3]
    assert client(in_prj).get_run(rid).info.status == 'FINISHED'

    bad = ip.run_cell("%%mlnb track --experiment cellexp\nx = 1\nraise RuntimeError('cell failed')\n")
    assert not bad.success and isinstance(bad.error_in_exec, RuntimeError)
    failed = exp_runs(in_prj, 'cellexp')[-1]
    assert failed.info.status == 'FAILED'
    tb = Path(client(in_prj).download_artifacts(failed.info.run_id, 'traceback.txt', str(in_prj.root / '.mlnb'))).read_text()
    assert "RuntimeError: cell failed" in tb and 'raise RuntimeError' in tb

    intr = ip.run_cell("%%mlnb track --experiment cellexp\nraise KeyboardInterrupt\n")
    assert not intr.success
    assert exp_runs(in_prj, 'cellexp')[-1].info.status == 'KILLED'

    # bad input: one line, no run left RUNNING
    r = ip.run_cell("%%mlnb track --experiment cellexp --params nosuchvar\nfound = 1\n")  # read when the cell ends: its run fails
    assert not r.success and 'names no variable: nosuchvar; the cell defined found' in str(r.error_in_exec)
    assert exp_runs(in_prj, 'cellexp')[-1].info.status == 'FAILED'
    assert ip.run_cell("%%mlnb track --experiment cellexp --params C\nC = 0.5\n").success  # assigned in the cell (the README's example)
    assert exp_runs(in_prj, 'cellexp')[-1].data.params == {'C': '0.5'}
    r = ip.run_cell("%%mlnb track --experiment cellexp\nimport mlnb\nmlnb.log(acc='high')\n")
    assert not r.success and "metric 'acc' must be a number" in str(r.error_in_exec)
    assert all(x.info.status != 'RUNNING' for x in exp_runs(in_prj, 'cellexp'))
    r = ip.run_cell("%mlnb track --experiment cellexp")
    assert not r.success and 'runs a notebook cell' in str(r.error_in_exec)

    # `%mlnb runs`: the result is the table (a live view is shown where widgets are on)
    assert ip.run_cell("t = %mlnb runs --experiment cellexp --sort status").success
    t = ip.user_ns['t']
    assert [row['status'] for row in t.rows][:2] == ['KILLED', 'FINISHED'] and len(t) == 7
    assert '<table' in t._repr_html_()
    r = ip.run_cell("%mlnb runs --experiment nosuchexp")
    assert not r.success and "no experiment named 'nosuchexp'" in str(r.error_in_exec)


# ---------------------------------------------------------------- lineage, seen by MLflow's own client
def test_search_runs_sees_lineage(in_prj):
    import mlflow, mlnb
    (in_prj.root / 'data.csv').write_text('a,b\n1,2\n')
    subprocess.run([sys.executable, '-m', 'dvc', 'add', 'data.csv', '-q'], cwd=in_prj.root, check=True,
                   env={**os.environ, 'DVC_NO_ANALYTICS': '1'})
    subprocess.run(['git', 'add', '-A'], cwd=in_prj.root)
    subprocess.run(['git', '-c', 'user.email=t@t', '-c', 'user.name=t', 'commit', '-qm', 'data'], cwd=in_prj.root, check=True)
    (in_prj.root / 'train.py').write_text('print(1)\n')
    subprocess.run(['git', 'add', 'train.py'], cwd=in_prj.root, check=True)   # staged, not committed: in the diff
    nb = in_prj.root / 'analysis.ipynb'
    nb.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    os.environ['MLNB_NOTEBOOK'] = str(nb)
    try:
        with mlnb.run(experiment='lineage', params={'lr': 0.1}) as r:
            mlnb.data.versions.load('data.csv')  # a versioned dataset: an MLflow dataset input of the run
            mlnb.log(loss=1.0)
            with mlnb.run(name='child') as child: mlnb.log(loss=0.5)
    finally:
        del os.environ['MLNB_NOTEBOOK']
    commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=in_prj.root, capture_output=True, text=True).stdout.strip()
    mlflow.set_tracking_uri(in_prj.tracking_uri)
    df = mlflow.search_runs(experiment_names=['lineage'])
    assert len(df) == 2
    for _, row in df.iterrows():
        assert row['tags.mlnb.git.commit'] == commit and row['tags.mlflow.source.git.commit'] == commit
        assert row['tags.mlnb.python'] and row['tags.mlnb.dvc.data.csv']
    top = df[df['run_id'] == r.id].iloc[0]
    assert top['tags.mlnb.git.dirty'] == 'true' and top['params.lr'] == '0.1'
    assert top['tags.mlnb.notebook'] == 'analysis.ipynb' == top['tags.mlflow.source.name']  # its path in the project
    assert top['tags.mlflow.source.type'] == 'NOTEBOOK'
    arts = {a.path for a in client(in_prj).list_artifacts(r.id, 'lineage')}
    assert {'lineage/requirements.txt', 'lineage/git.diff', 'lineage/analysis.ipynb', 'lineage/dvc.json'} <= arts
    diff = Path(client(in_prj).download_artifacts(r.id, 'lineage/git.diff', str(in_prj.root / '.mlnb'))).read_text()
    assert 'train.py' in diff
    assert df[df['run_id'] == child.id].iloc[0]['tags.mlflow.parentRunId'] == r.id
    md5 = top['tags.mlnb.dvc.data.csv']
    (ds,) = client(in_prj).get_run(r.id).inputs.dataset_inputs
    assert (ds.dataset.name, ds.dataset.digest, json.loads(ds.dataset.profile)) == ('data.csv', md5, {'num_rows': 1})


# ---------------------------------------------------------------- a locked store: nothing lost
def test_locked_store_all_metrics_arrive(in_prj):
    import mlnb
    db = sqlite3.connect(in_prj.sqlite_path, timeout=60, isolation_level=None)
    with mlnb.run(experiment='locked') as r:
        db.execute('BEGIN EXCLUSIVE')   # the store is locked for longer than MLflow's 20 s busy timeout
        try:
            for i in range(10_000): mlnb.log(loss=float(i), step=i)
            time.sleep(24)   # the flushes of this period fail and spool
            spooled = list((in_prj.dir / 'spool').glob('*.json'))
            assert spooled, "a flush against the locked store should have spooled its batch"
        finally:
            db.execute('ROLLBACK'); db.close()
    hist = client(in_prj).get_metric_history(r.id, 'loss')
    assert sorted(m.value for m in hist) == [float(i) for i in range(10_000)]
    assert client(in_prj).get_run(r.id).info.status == 'FINISHED'
    assert not list((in_prj.dir / 'spool').glob('*.json'))


# ---------------------------------------------------------------- kill -9 mid-logging, then `mlnb sync`
CHILD = """
import sys, mlnb
with mlnb.run(experiment='killed') as r:
    for i in range(3000): mlnb.log(loss=float(i), step=i)
    r.flush()                                  # these 3,000 are stored
    print(r.id, flush=True)
    sys.stdin.readline()                       # the test locks the store, then lets us go on
    for i in range(3000, 6000): mlnb.log(loss=float(i), step=i)
    print('logging', flush=True)
    sys.stdin.readline()                       # killed here, while the store is still locked
"""

def spooled_steps(spool):
    from mlnb.track.store import pending
    steps = set()
    for f in pending(spool):
        try: steps |= {m[3] for m in json.loads(f.read_text())['metrics']}
        except FileNotFoundError: pass   # replayed meanwhile
    return steps


def test_kill9_then_sync(in_prj):
    from mlnb.track.store import pending
    spool = in_prj.dir / 'spool'
    p = subprocess.Popen([sys.executable, '-c', CHILD], cwd=in_prj.root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env={**os.environ, 'MLNB_TRACKING_FLUSH_INTERVAL': '0.2'})
    run_id = p.stdout.readline().strip()
    db = sqlite3.connect(in_prj.sqlite_path, timeout=60, isolation_level=None)
    db.execute('BEGIN EXCLUSIVE')   # locked for longer than MLflow's 20 s busy timeout: the writer spools
    try:
        p.stdin.write('go\n'); p.stdin.flush()
        assert p.stdout.readline().strip() == 'logging'
        deadline = time.time() + 120   # each write waits out MLflow's 20 s busy timeout before it spools
        while not spooled_steps(spool) & set(range(3000, 6000)) and time.time() < deadline: time.sleep(0.5)
        assert spooled_steps(spool), "the writer should have spooled the metrics it could not store"
        import psutil
        writers = psutil.Process(p.pid).children()   # the writer process outlives a kill -9 of its parent
        p.send_signal(signal.SIGKILL); p.wait()
        time.sleep(1)
        in_spool = spooled_steps(spool)
    finally:
        db.execute('ROLLBACK'); db.close()
    psutil.wait_procs(writers, timeout=60)   # it stores what it still held, then exits at the end of its input
    stored = {m.step for m in client(in_prj).get_metric_history(run_id, 'loss')}
    assert set(range(3000)) <= stored and in_spool
    r = mlnb_cli('sync', cwd=in_prj.root)
    assert 'replayed' in r.stdout and 'closed 1 orphaned run' in r.stdout, r.stdout
    after = {m.step for m in client(in_prj).get_metric_history(run_id, 'loss')}
    assert (stored | in_spool) <= after, "every metric that was flushed or spooled is in the store"
    assert after == set(range(6000))   # here the flush thread had shipped all of them before the kill
    assert client(in_prj).get_run(run_id).info.status == 'KILLED'   # sync closed the orphaned run
    assert not pending(spool)


# ---------------------------------------------------------------- SIGTERM: the run closes KILLED, its metrics flushed
def test_sigterm_flushes_and_kills_run(in_prj):
    code = ("import os, signal, time, mlnb\n"
            "with mlnb.run(experiment='term') as r:\n"
            "    print(r.id, flush=True)\n"
            "    for i in range(500): mlnb.log(loss=float(i), step=i)\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    time.sleep(60)\n")
    p = subprocess.run([sys.executable, '-c', code], cwd=in_prj.root, capture_output=True, text=True, timeout=120,
                       env={**os.environ, 'MLNB_TRACKING_FLUSH_INTERVAL': '30'})   # no background flush before the signal
    assert p.returncode == 143, p.stderr
    run_id = p.stdout.split()[0]
    assert client(in_prj).get_run(run_id).info.status == 'KILLED'
    assert len(client(in_prj).get_metric_history(run_id, 'loss')) == 500


# ---------------------------------------------------------------- the CLI: runs and sync
def test_cli_runs_and_compare(in_prj):
    import mlnb
    ids = []
    for lr in (0.1, 0.2):
        with mlnb.run(experiment='cli', params={'lr': lr}) as r:
            for i in range(4): mlnb.log(loss=lr * (4 - i))
        ids.append(r.id)
    out = mlnb_cli('runs', '--experiment', 'cli', '--sort', 'metrics.loss', '--ascending', cwd=in_prj.root).stdout
    lines = out.strip().splitlines()
    assert lines[1].split()[:4] == ['run', 'name', 'experiment', 'status'] and 'params.lr' in lines[1]
    assert lines[2].startswith(ids[0][:8]) and lines[3].startswith(ids[1][:8])   # loss 0.1 < 0.2
    out = mlnb_cli('runs', '--compare', ids[0][:8], ids[1], cwd=in_prj.root).stdout
    assert 'lr:' in out and 'metrics: loss' in out
    r = mlnb_cli('runs', '--experiment', 'nope', cwd=in_prj.root, check=False)
    assert r.returncode == 2 and "no experiment named 'nope'" in r.stderr
    r = mlnb_cli('runs', '--compare', ids[0], 'deadbeef', cwd=in_prj.root, check=False)
    assert r.returncode == 2 and "no run with id 'deadbeef'" in r.stderr
    assert 'replayed 0 spooled batches' in mlnb_cli('sync', cwd=in_prj.root).stdout


# ---------------------------------------------------------------- a real MLflow tracking server on loopback
def _free_port():
    s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close(); return port


@pytest.fixture
def server(tmp_path):
    port = _free_port()
    log = open(tmp_path / 'server.log', 'w')
    p = subprocess.Popen([sys.executable, '-m', 'mlflow', 'server', '--host', '127.0.0.1', '--port', str(port),
                          '--backend-store-uri', f"sqlite:///{tmp_path}/server.db", '--artifacts-destination', str(tmp_path / 'art'),
                          '--workers', '1'], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    import urllib.request
    while True:
        try: urllib.request.urlopen(url + '/health', timeout=2); break
        except Exception:
            if p.poll() is not None or time.time() > deadline:
                p.kill(); raise RuntimeError((tmp_path / 'server.log').read_text()[-2000:])
            time.sleep(0.5)
    yield url
    os.killpg(p.pid, signal.SIGTERM)
    try: p.wait(20)
    except subprocess.TimeoutExpired: os.killpg(p.pid, signal.SIGKILL)


def test_remote_tracking_server(prj, server, monkeypatch, tmp_path):
    import mlnb
    from mlnb.config import Project
    from mlnb.track.store import StoreError
    monkeypatch.chdir(prj.root)
    monkeypatch.setenv('MLNB_TRACKING_URI', server)
    monkeypatch.setenv('MLNB_TRACKING_SYSTEM_INTERVAL', '0')
    rp = Project(prj.root)
    assert rp.tracking_uri == server
    (tmp_path / 'model.txt').write_text('weights')
    with mlnb.run(experiment='remote', params={'lr': 0.3}, project=rp) as r:
        for i in range(2500): mlnb.log(loss=1.0 / (i + 1), step=i)
        mlnb.log_artifact(tmp_path / 'model.txt')
    from mlflow import MlflowClient
    c = MlflowClient(server)
    got = c.get_run(r.id)
    assert got.info.status == 'FINISHED' and got.data.params == {'lr': '0.3'} and got.data.tags['mlnb.python']
    assert len(c.get_metric_history(r.id, 'loss')) == 2500
    assert 'model.txt' in {a.path for a in c.list_artifacts(r.id)}
    out = mlnb_cli('runs', cwd=prj.root, env={'MLNB_TRACKING_URI': server}).stdout
    assert r.id[:8] in out and 'FINISHED' in out
    # a server that is down: a clear one-line error at the start, no run left behind
    down = Project(prj.root, environ={**os.environ, 'MLNB_TRACKING_URI': f"http://127.0.0.1:{_free_port()}"})
    with pytest.raises(StoreError, match='is not reachable'):
        with mlnb.run(experiment='remote', project=down): pass
    assert mlnb.track.tracking.active_run() is None


# ---------------------------------------------------------------- GPU: tensors are buffered without a device sync
def test_cuda_tensors_logged_without_sync():
    torch = pytest.importorskip('torch')
    if not torch.cuda.is_available(): pytest.skip('needs CUDA')
    from mlnb.track.logger import metric_value, to_floats
    losses = [torch.tensor(float(i), device='cuda') for i in range(10_000)]
    other = [torch.tensor(1.5, device='cuda', dtype=torch.bfloat16), torch.tensor([3], device='cuda'), 0.25]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')   # a device->host sync in the logging path would raise
    try:
        t = time.perf_counter()
        vals = [metric_value('loss', l * 2) for l in losses]
        per_call = (time.perf_counter() - t) / len(losses) * 1e6
        vals += [metric_value('x', v) for v in other]
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert all(not v.requires_grad for v in vals[:-1])
    assert to_floats(vals) == [2.0 * i for i in range(10_000)] + [1.5, 3.0, 0.25]   # one bulk copy per device
    print(f"metric_value on a CUDA tensor: {per_call:.2f} us/call ({torch.cuda.get_device_name(0)})")
