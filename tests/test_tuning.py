"Integration tests of `mlnb.tune`: pruning with `mlnb.train`, parallel and CLI workers, storage interop, CLI errors."
import json, os, subprocess, sys, textwrap
from pathlib import Path
import pytest

optuna = pytest.importorskip("optuna")
from mlflow import MlflowClient
from mlnb.project import init
from mlnb.tuning.study import tune
from mlnb.tuning.space import TuneError
from mlnb.tuning.storage import StorageError


@pytest.fixture
def prj(tmp_path, monkeypatch):
    p = init(tmp_path/"p")
    monkeypatch.chdir(p.root)
    return p


def _kids(p, run_id):
    c = MlflowClient(p.tracking_uri)
    exp = c.get_run(run_id).info.experiment_id
    return c.search_runs([exp], f"tags.mlflow.parentRunId = '{run_id}'", max_results=1000)


def _journal(p):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    return JournalStorage(JournalFileBackend(p.optuna_storage))


def test_train_spec_prunes_bad_region_and_apply(prj):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    X = torch.randn(256, 4, generator=g); y = (X[:, 0] + X[:, 1] > 0).long()
    spec = dict(model=lambda p: torch.nn.Sequential(torch.nn.Linear(4, p['hidden']), torch.nn.ReLU(), torch.nn.Linear(p['hidden'], 2)),
                data=(X[:192], y[:192]), val=(X[192:], y[192:]), metrics=['accuracy'], epochs=4, batch_size=64, devices='cpu', precision='fp32')
    res = tune(spec, {"lr": ("log", 1e-6, 3e-1), "hidden": [8, 16]}, n_trials=10, seed=0, metric="val_loss", direction="minimize",
               sampler="random", pruner="median")
    assert len(res.trials) == 10
    pruned = [t['params']['lr'] for t in res.trials if t['state'] == 'PRUNED']
    assert pruned and min(pruned) < 1e-3  # the known-bad region: tiny rates fall behind the median
    assert res.best_params['lr'] > 1e-3
    kids = _kids(prj, res.run_id)
    want = sorted({'COMPLETE': 'FINISHED', 'PRUNED': 'KILLED'}[t['state']] for t in res.trials)
    assert sorted(r.info.status for r in kids) == want
    assert all('val_loss' in r.data.metrics for r in kids)
    assert not list((prj.dir).rglob('last.pt'))  # pruned trials leave no checkpoint behind
    best = res.apply(epochs=2)
    assert best.model[0].out_features == res.best_params['hidden'] and best.epochs == 2
    assert 'mlflow.parentRunId' not in MlflowClient(prj.tracking_uri).get_run(best.run_id).data.tags


def _obj(p):
    return (p['x'] - 1) ** 2


def test_two_processes_exact_trial_count(prj):
    res = tune(_obj, {"x": (-3.0, 3.0)}, n_trials=40, n_jobs=2, study="par", seed=0)
    st = optuna.load_study(study_name="par", storage=_journal(prj))  # Optuna's own client reads mlnb's study
    nums = sorted(t.number for t in st.trials)
    assert nums == list(range(40)) and len(res.trials) == 40
    assert all(t.state.name == 'COMPLETE' for t in st.trials)
    assert len(_kids(prj, res.run_id)) == 40  # every trial a nested run, none lost or duplicated
    assert abs(res.best_params['x'] - 1) < 1


def test_cli_tune_and_workers(prj, tmp_path):
    mod = tmp_path/"objs"; mod.mkdir()
    (mod/"myobj.py").write_text(textwrap.dedent("""
        def obj(p):
            if p['x'] > 2.5: raise RuntimeError('boom')
            return (p['x'] - 1) ** 2
    """))
    env = dict(os.environ, PYTHONPATH=f"{mod}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    run = lambda *a: subprocess.run(["mlnb", *a], cwd=prj.root, env=env, capture_output=True, text=True, timeout=300)
    r = run("tune", "myobj:obj", '{"x": (-3.0, 3.0)}', "--n-trials", "5", "--study", "cli", "--seed", "0")
    assert r.returncode == 0, r.stderr
    procs = [subprocess.Popen(["mlnb", "tune-worker", "cli", "--n-trials", "20", "--storage", prj.optuna_storage], cwd=prj.root, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    st = optuna.load_study(study_name="cli", storage=_journal(prj))
    assert sorted(t.number for t in st.trials) == list(range(45))
    states = {t.state.name for t in st.trials}
    assert 'COMPLETE' in states
    fails = [t for t in st.trials if t.state.name == 'FAIL']
    assert all(t.params['x'] > 2.5 and 'boom' in t.user_attrs['mlnb.error'] for t in fails)  # a raising trial is FAIL, the study goes on
    # the workers' trials are nested runs of the study's run
    assert len(_kids(prj, st.user_attrs['mlnb.parent_run'])) == 45


def test_sqlite_url_and_continue(prj, tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    tune(_obj, {"x": (-3.0, 3.0)}, n_trials=4, study="s", storage=url, seed=0)
    res = tune(_obj, {"x": (-3.0, 3.0)}, n_trials=3, study="s", storage=url, seed=1)
    assert (len(res.trials), res.n_new) == (7, 3)
    assert len(optuna.load_study(study_name="s", storage=url).trials) == 7


def test_cli_bad_inputs(prj):
    run = lambda *a: subprocess.run(["mlnb", *a], cwd=prj.root, capture_output=True, text=True, timeout=120)
    r = run("tune", "json:dumps", "{}", "--n-trials", "1")
    assert r.returncode == 2 and "empty" in r.stderr + r.stdout
    r = run("tune", "json:dumps", '{"x": (0.0, 1.0)}', "--direction", "sideways")
    assert r.returncode == 1 and "unknown direction" in r.stderr + r.stdout
    r = run("tune", "json:dumps", '{"x": (0.0, 1.0)}', "--storage", "sqlite:////nonexistent/dir/o.db")
    assert r.returncode == 1 and "cannot reach" in r.stderr + r.stdout
    r = run("tune-worker", "nostudy")
    assert r.returncode == 1 and "no study 'nostudy'" in r.stderr + r.stdout
    with pytest.raises(StorageError, match="cannot reach|driver"):
        tune(_obj, {"x": (0.0, 1.0)}, n_trials=1, storage="postgresql://nobody@127.0.0.1:1/none")


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@pytest.fixture
def postgres(tmp_path):
    "A throwaway PostgreSQL server on 127.0.0.1 (as the `postgres` user when run as root); yields its URL."
    import shutil, pwd
    pytest.importorskip("psycopg2")
    if not (shutil.which("initdb") and shutil.which("pg_ctl")): pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    pre = []
    if os.geteuid() == 0:
        try: pwd.getpwnam("postgres")
        except KeyError: pytest.skip("running as root and there is no `postgres` user to run the server")
        pre = ["runuser", "-u", "postgres", "--"]
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="mlnb-pg-")); (d/"run").mkdir()  # outside pytest's tmp (0700 for root)
    if pre: subprocess.run(["chown", "-R", "postgres", str(d)], check=True)
    r = subprocess.run(pre + ["initdb", "-D", str(d/"data"), "-U", "mlnb", "--auth=trust"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    port = _free_port()
    subprocess.run(pre + ["pg_ctl", "-D", str(d/"data"), "-l", str(d/"log"), "-w", "-o", f"-p {port} -k {d/'run'} -h 127.0.0.1", "start"],
                   check=True, capture_output=True)
    try:
        subprocess.run(pre + ["createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "mlnb", "optuna"], check=True, capture_output=True)
        yield f"postgresql://mlnb@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run(pre + ["pg_ctl", "-D", str(d/"data"), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def test_postgres_three_workers(prj, postgres):
    res = tune(_obj, {"x": (-3.0, 3.0)}, n_trials=2, study="pg", storage=postgres, seed=0)
    assert len(res.trials) == 2
    procs = [subprocess.Popen(["mlnb", "tune-worker", "pg", "--n-trials", "10", "--storage", postgres, "--objective", "test_tuning:_obj"],
                              cwd=prj.root, env=dict(os.environ, PYTHONPATH=f"{Path(__file__).parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    st = optuna.load_study(study_name="pg", storage=postgres.replace("postgresql://", "postgresql+psycopg2://"))
    assert sorted(t.number for t in st.trials) == list(range(32))  # none lost or duplicated
    assert all(t.state.name == 'COMPLETE' for t in st.trials)


def test_magic_line_and_cell(prj, monkeypatch):
    monkeypatch.setenv("MLNB_TRACKING_LINEAGE", "false")
    from IPython.core.interactiveshell import InteractiveShell
    sh = InteractiveShell.instance()
    try:
        sh.run_cell('%load_ext mlnb')
        sh.run_cell('def bowl(p): return (p["x"] - 0.3) ** 2')
        r = sh.run_cell('''res = %mlnb tune bowl '{"x": (0.0, 1.0)}' --n-trials 4 --seed 0''')
        assert r.success and len(sh.user_ns['res'].trials) == 4
        r = sh.run_cell('%%mlnb tune bowl --n-trials 2 --study cell\nx: {low: 0.0, high: 1.0}\n')
        assert r.success  # (a bare cell gives None when its live view showed the result)
        assert len(optuna.load_study(study_name='cell', storage=_journal(prj)).trials) == 2
        r = sh.run_cell('''%mlnb tune bowl '{}' ''')
        assert not r.success and 'empty' in str(r.error_in_exec)
    finally:
        sh.run_cell('%unload_ext mlnb')
        InteractiveShell.clear_instance()


def test_optuna_dashboard_reads_studies(prj):
    optuna_dashboard = pytest.importorskip("optuna_dashboard")
    from wsgiref.util import setup_testing_defaults
    tune(_obj, {"x": (-3.0, 3.0)}, n_trials=3, study="dash", seed=0, track=False)
    app = optuna_dashboard.wsgi(_journal(prj))
    env = {'PATH_INFO': '/api/studies', 'REQUEST_METHOD': 'GET'}
    setup_testing_defaults(env)
    status = []
    body = b''.join(app(env, lambda s, h, *a: status.append(s)))
    assert status[0].startswith('200')
    studies = json.loads(body)['study_summaries']
    assert [s['study_name'] for s in studies] == ['dash']
    env = {'PATH_INFO': f"/api/studies/{studies[0]['study_id']}", 'REQUEST_METHOD': 'GET', 'QUERY_STRING': 'after=0'}
    setup_testing_defaults(env)
    detail = json.loads(b''.join(app(env, lambda s, h, *a: None)))
    assert len(detail['trials']) == 3 and detail['best_trials']


# ---- devices: one GPU per worker, memory released between trials (faked on CPU) --------------------------------------

def _where(trial):
    "Records where the trial ran: the worker's process and the devices CUDA would see there."
    trial.set_user_attr('pid', os.getpid())
    trial.set_user_attr('cvd', os.environ.get('CUDA_VISIBLE_DEVICES'))
    return trial.params['x'] ** 2


def _devices_by_worker(prj, study):
    st = optuna.load_study(study_name=study, storage=_journal(prj))
    by = {}
    for t in st.trials: by.setdefault(t.user_attrs['pid'], set()).add(t.user_attrs['cvd'])
    return st, by


def test_workers_pinned_one_gpu_each(prj, monkeypatch):
    import mlnb.tuning.worker as T
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(T, "_gpu_count", lambda: 2)  # a machine with two GPUs, as `nvidia-smi -L` would count them
    tune(_where, {"x": (-1.0, 1.0)}, n_trials=8, n_jobs=2, study="pin", seed=0, track=False)
    st, by = _devices_by_worker(prj, "pin")
    assert len(st.trials) == 8 and len(by) == 2 and os.getpid() not in by  # two forked workers ran them
    assert all(len(d) == 1 for d in by.values())  # each worker sees one device the whole study...
    assert sorted(d for ds in by.values() for d in ds) == ['0', '1']  # ...and each its own
    assert "CUDA_VISIBLE_DEVICES" not in os.environ  # the notebook's process is left as it was


def test_pinning_follows_cuda_visible_devices(prj, monkeypatch):
    import mlnb.tuning.worker as T
    monkeypatch.setattr(T, "_gpu_count", lambda: 8)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")  # the GPUs this process may use: workers get one of those each
    tune(_where, {"x": (-1.0, 1.0)}, n_trials=6, n_jobs=2, study="cvd", seed=0, track=False)
    _, by = _devices_by_worker(prj, "cvd")
    assert sorted(d for ds in by.values() for d in ds) == ['5', '7']
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # one GPU: nothing to spread, the workers share it
    tune(_where, {"x": (-1.0, 1.0)}, n_trials=4, n_jobs=2, study="one", seed=0, track=False)
    _, by = _devices_by_worker(prj, "one")
    assert set().union(*by.values()) == {'3'}
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(T, "_gpu_count", lambda: 0)  # no GPU: nothing is pinned
    assert T._pinning(3) == [None, None, None]
    monkeypatch.setattr(T, "_gpu_count", lambda: 2)
    seen = []
    from mlnb.core import events
    with events.listening('tune.warning', seen.append):
        assert T._pinning(3) == ['0', '1', '0']  # more workers than GPUs: round-robin, with a warning
        monkeypatch.setattr(T, "_cuda_started", lambda: True)
        assert T._pinning(2) == [None, None]  # CUDA started here: a forked worker could not use it, so no pinning...
    assert "share a GPU" in seen[0].msg and "CUDA is already started" in seen[1].msg  # ...and the user is told why


class _Held:
    "Stands for a trial's tensors: kept alive by a reference cycle, so only a garbage collection frees it."
    def __init__(self): self.me = self


def test_gpu_memory_released_after_every_trial(prj, monkeypatch):
    torch = pytest.importorskip("torch")
    import weakref
    held, calls = [], []
    def objective(p):
        h = _Held(); held.append(weakref.ref(h))
        if p['x'] > 0.5: raise RuntimeError("CUDA out of memory (pretend)")  # its traceback holds `h` too
        return p['x']
    def empty_cache():  # the moment PyTorch's cache goes back to the driver: the trial's objects must be gone already
        calls.append(held[-1]() is None)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # as if the trials had used CUDA in this process
    monkeypatch.setattr(torch.cuda, "empty_cache", empty_cache)
    res = tune(objective, {"x": (0.0, 1.0)}, n_trials=10, seed=0, study="mem", track=False, sampler="random")
    assert res.counts()['FAIL'] > 0 and res.counts()['COMPLETE'] > 0
    assert calls == [True] * 10  # after each trial, failed ones included, with the trial's objects collected first


# ---- the live view ---------------------------------------------------------------------------------------------------

def test_live_view_follows_parallel_workers_and_shows_the_plots(prj, monkeypatch):
    pytest.importorskip("ipywidgets")
    monkeypatch.setenv("MLNB_TRACKING_LINEAGE", "false")
    import mlnb.widgets.tune as W
    views = []
    def make_view(args, ctx):
        v = W.TuneView(f"tune {args.objective}"); v.imp_interval = 0; views.append(v); return v
    monkeypatch.setattr(W, "make_view", make_view)
    from IPython.core.interactiveshell import InteractiveShell
    sh = InteractiveShell.instance()
    try:
        sh.run_cell('%load_ext mlnb')
        sh.run_cell('def bowl2(p): return (p["x"] - 0.3) ** 2 + (0.5 if p["k"] == "b" else 0.0)')
        r = sh.run_cell('''res = %mlnb tune bowl2 '{"x": (0.0, 1.0), "k": ["a", "b"]}' --n-trials 12 --jobs 2 --seed 0 --study live''')
        assert r.success, r.error_in_exec
        res, v = sh.user_ns['res'], views[-1]
    finally:
        sh.run_cell('%unload_ext mlnb')
        InteractiveShell.clear_instance()
    # the workers' trials reached the notebook's view as they finished, each once
    assert sorted(t['number'] for t in v.trials) == list(range(12))
    live = W.study_html(v.trials, v.metric, v.direction, v.space, v._importances(), recent=True)
    for part in ("class='mlnb-history'", "class='mlnb-importances'", "class='mlnb-parallel'", "best trial <b>#", "latest trials"):
        assert part in live, part
    # the end state, also the static fallback the notebook keeps: the result's HTML with the same plots
    static = res._repr_html_()
    assert v.html.value.count("class='mlnb-parallel'") == 1 and "trials of live" in v.html.value
    for part in ("class='mlnb-history'", "class='mlnb-importances'", "class='mlnb-parallel'", f"best trial <b>#{res.best_number}</b>"):
        assert part in static, part
    assert set(res.importances) == {'x', 'k'} and abs(sum(res.importances.values()) - 1) < 1e-6
    assert v.actions.layout.display == 'flex'  # "Apply best" is offered
    v.button.click()
    assert v.applied == pytest.approx(res.best_value) and 'applied' in v.status.value  # the objective rerun with the best params
