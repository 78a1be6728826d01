"""First contact, executed as written: the README's commands in a fresh clone, its notebook blocks in a real kernel,
mlnb installed from its wheel (not the checkout), and every `run:` step of the CI workflow a template writes.

The venvs here see the test environment's packages (`--system-site-packages`, so nothing big is installed again) but
not its mlnb: that one is installed editable from this checkout through a finder module that a `.pth` file imports;
a stub module of the same name in the venv shadows it, so each venv runs only the mlnb installed into it.
"""
import json, os, re, shlex, signal, socket, subprocess, sys, sysconfig, time, urllib.request
from pathlib import Path
import pytest, yaml

ROOT = Path(__file__).resolve().parent.parent
KERNEL_WARNING = "Kernel is running over TCP without encryption"

def readme_blocks(lang:str) -> list[str]:
    "The README's fenced blocks in `lang`, in order."
    return re.findall(rf"^```{lang}\n(.*?)^```", (ROOT/'README.md').read_text(), re.S | re.M)

def make_venv(path:Path) -> dict:
    "A venv over the test environment's packages, without its mlnb; the environment to run commands in it."
    subprocess.run([sys.executable, '-m', 'venv', '--system-site-packages', str(path)], check=True)
    site = next(path.glob('lib/python*/site-packages'))
    for f in Path(sysconfig.get_paths()['purelib']).glob('__editable___mlnb_*_finder.py'):
        (site/f.name).write_text("def install(): pass  # shadows the test environment's editable mlnb\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(('MLNB_', 'VIRTUAL_ENV', 'PYTHONPATH'))}
    return {**env, 'PATH': f"{path/'bin'}{os.pathsep}{env['PATH']}", 'VIRTUAL_ENV': str(path), 'DVC_NO_ANALYTICS': '1',
            'PIP_DISABLE_PIP_VERSION_CHECK': '1'}

def sh(cmd:str, cwd, env, timeout=900) -> subprocess.CompletedProcess:
    "Run `cmd` with bash, as a user types it; stdout and stderr together."
    return subprocess.run(['bash', '-e', '-c', cmd], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)

def ok(r:subprocess.CompletedProcess, what:str) -> str:
    assert r.returncode == 0, f"{what} failed ({r.returncode}):\n{r.stdout[-4000:]}"
    assert KERNEL_WARNING not in r.stdout, f"{what}: a kernel warned about TCP"
    return r.stdout

def git_clean(path:Path):
    out = subprocess.run(['git', 'status', '--porcelain'], cwd=path, capture_output=True, text=True, check=True).stdout
    assert out == '', f"git status in {path} is not clean:\n{out}"

def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture(scope='module')
def wheel(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp('wheel')
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation', '-w', str(d), str(ROOT)],
                   check=True, capture_output=True)
    return next(d.glob('mlnb-*.whl'))

# --- the installed wheel, a template project, and its CI workflow -----------------------------------------------

@pytest.mark.timeout(2400)  # three pipeline runs and a workflow: minutes, more on a busy machine
def test_wheel_template_run_and_ci_workflow(wheel, tmp_path):
    env = make_venv(tmp_path/'venv')
    work = tmp_path/'work'; work.mkdir()  # not the checkout: the templates must come from the wheel
    ok(sh(f"python -m pip install -q --no-deps {wheel}", work, env), "pip install the wheel")
    where = ok(sh("python -c 'import mlnb; print(mlnb.__file__)'", work, env), "import mlnb").strip()
    assert where.startswith(str(tmp_path/'venv')), where

    req = f"mlnb @ {wheel.as_uri()}"
    out = ok(sh(f"mlnb init proj --template classification --requirement {shlex.quote(req)}", work, env), "mlnb init --template")
    proj = work/'proj'
    assert out.count('template.done') == 1 and out.count('init.done') == 1, out
    assert (proj/'requirements.txt').read_text().splitlines()[-1] == req
    git_clean(proj)  # the project a template makes is committed whole
    workflows = sorted((proj/'.github'/'workflows').glob('*.y*ml'))
    assert workflows
    for wf in workflows: yaml.safe_load(wf.read_text())  # GitHub rejects a file that is not YAML before any step runs

    out = ok(sh("mlnb run", proj, env, timeout=900), "mlnb run")
    assert 'ran 4 stage(s)' in out and 'git.commit' in out
    git_clean(proj)
    from mlflow import MlflowClient
    c = MlflowClient(f"sqlite:///{proj}/.mlnb/mlflow.db")
    exp = c.get_experiment_by_name('proj')
    assert exp is not None and c.search_runs([exp.experiment_id])  # runs go to the experiment named after the project
    assert not c.search_runs([c.get_experiment_by_name('Default').experiment_id])

    out = ok(sh("mlnb run --set train.C=0.05", proj, env, timeout=900), "mlnb run --set")
    assert "parameters C = 0.05" in out and "C = 1.0" not in out  # the values the step runs with, not the defaults
    git_clean(proj)
    r = sh("mlnb promote classifier @challenger", proj, env)  # what the register step suggests
    assert 'has no holdout' not in r.stdout and (r.returncode == 0 or 'not promoted' in r.stdout), r.stdout[-2000:]
    assert r.stdout.count('registry.gate') == 1, r.stdout

    # the workflow, step by step, in a fresh checkout of the project (as actions/checkout gives it)
    subprocess.run(['git', 'clone', '-q', str(proj), str(tmp_path/'ci')], check=True)
    steps = yaml.safe_load((tmp_path/'ci'/'.github'/'workflows'/'mlnb.yml').read_text())['jobs']['pipeline']['steps']
    runs = [s['run'] for s in steps if 'run' in s]
    assert len(runs) >= 4 and any('requirements.txt' in r for r in runs)
    ci_env = {**env, 'CI': 'true'}
    for cmd in runs: ok(sh(cmd, tmp_path/'ci', ci_env, timeout=900), f"workflow step `{cmd.strip()}`")
    assert 'classifier version' in (tmp_path/'ci'/'outputs'/'card.html').read_text()

    # the whole demo is the same template run again (the README test runs it): here, that the wheel holds every file
    # of the package that git tracks (templates, demo and starter files, notebooks' modules), so nothing is found
    # only in a checkout
    import zipfile
    tracked = subprocess.run(['git', 'ls-files', 'mlnb'], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    missing = [f for f in tracked if f not in in_wheel and not f.endswith(('.pyc', '.gitignore'))]
    assert not missing, f"files of the package missing from the wheel: {missing[:20]}"
    assert any(f.startswith('mlnb/project_templates/classification/') for f in in_wheel)

# --- the README, as written -------------------------------------------------------------------------------------

@pytest.mark.timeout(2400)  # an install, quickstart twice and a notebook: minutes, more on a busy machine
def test_readme_commands_and_notebook_as_written(tmp_path):
    blocks = readme_blocks('sh')
    assert [b.strip() for b in blocks[1:]] == ['bash scripts/test.sh']  # the test command is what runs this test
    if subprocess.run(['git', 'status', '--porcelain', '--', 'mlnb', 'nbs', 'README.md', 'pyproject.toml'], cwd=ROOT, capture_output=True, text=True).stdout:
        pytest.fail("the checkout has uncommitted changes to the package, which a clone would not have: commit them first")
    clone = tmp_path/'clone'
    subprocess.run(['git', 'clone', '-q', str(ROOT), str(clone)], check=True)
    env = make_venv(tmp_path/'venv')

    out = ok(sh(blocks[0], clone, env, timeout=1500), f"README command 1 `{blocks[0].strip()}`")
    steps = [l.split('quickstart.step: ', 1)[1] for l in out.splitlines() if 'quickstart.step: ' in l]
    for part in ('pipeline: ran 4 stage(s)', 'drift: ', 'explain: ', 'fairness: ', 'retrain: ', 'card: ', 'serve: POST'):
        assert sum(s.startswith(part) for s in steps) == 1, (part, steps)
    assert "'prediction':" in [s for s in steps if s.startswith('serve:')][0]
    assert out.count('registry.gate') == 1 and out.count('init.done') == 1, out
    qs = clone/'mlnb-quickstart'
    git_clean(qs); git_clean(clone)
    from mlflow import MlflowClient
    c = MlflowClient(f"sqlite:///{qs}/.mlnb/mlflow.db")
    champ = c.get_model_version_by_alias('classifier', 'champion')
    assert c.get_experiment_by_name('mlnb-quickstart') is not None

    # every command it prints works as printed
    where = out.split('Where to look:', 1)[1].splitlines()[1:6]
    card = Path(where[1].split('#')[0].strip())
    assert f"classifier version {champ.version}" in card.read_text()  # the card of the champion as it is now
    # issue 19: the card's data section lists the DVC md5 of each input; metrics are grouped; drift, SHAP and fairness
    # evidence (other runs, made for the champion) appear with their dates
    import re, yaml
    page = card.read_text()
    assert str(champ.version) == '2' and 'Model card: classifier version 2 @champion' in page
    assert yaml.safe_load((qs/'data'/'raw.csv.dvc').read_text())['outs'][0]['md5'] in page
    lock = yaml.safe_load((qs/'dvc.lock').read_text())['stages']['prepare']['outs'][0]
    assert lock['md5'] in page and 'No data versions were recorded' not in page
    for h in ('Model quality', 'Training curves (final values)', 'System (last sample)'): assert f"<h3>{h}</h3>" in page, h
    quality = page.split('<h3>Model quality</h3>', 1)[1].split('<h3>', 1)[0]
    assert 'val_accuracy' in quality and 'epoch' not in quality and 'system/' not in quality and 'samples_per_s' not in quality
    # the training notebook by its path in the project (not ipykernel_launcher.py), only the parameters that were set,
    # and only what the train stage read (not the outputs of later stages)
    assert '<td>nbs/train.ipynb</td>' in page and 'ipykernel_launcher' not in page
    params = page.split('<h2>Training procedure and parameters</h2>', 1)[1].split('<h2>', 1)[0]
    assert 'logisticregression__C' in params and 'logisticregression__max_iter' in params
    for default in ('memory', 'verbose', 'tol', 'penalty', 'with_mean', 'fit_intercept'): assert f"__{default}<" not in params and f">{default}<" not in params, default
    data = page.split('<h2>Training data</h2>', 1)[1].split('<h2>', 1)[0]
    assert 'outputs/model.json' not in data and 'metrics.json' not in data
    for h in ('Fairness', 'Drift', 'Top SHAP features'):
        sec = page.split(f"<h2>{h}</h2>", 1)[1].split('<h2>', 1)[0]
        assert re.search(r"Computed \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC in run", sec), (h, sec[:400])
    reports, audit = [x.strip() for x in where[2].split('#')[0:2]], where[2].split(';', 1)[1].split('#')[0].strip()
    assert list(Path(reports[0]).glob('retrain-*.html'))
    ok(sh(audit, clone, env), audit)
    ok(sh(where[3].split('#')[0], clone, env), where[3])
    lab = where[4].split('#')[0].strip()
    assert lab.endswith('&& jupyter lab'), lab
    ok(sh(lab + ' --version', clone, env), lab)
    ui = where[0].split('#')[0].strip()
    assert ui.startswith('mlflow ui --backend-store-uri ')
    port = free_port()
    p = subprocess.Popen(shlex.split(ui) + ['--port', str(port)], cwd=clone, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r: assert r.status == 200; break
            except OSError: time.sleep(0.5)
        else: pytest.fail(f"`{ui}` did not answer")
    finally: os.killpg(p.pid, signal.SIGTERM); p.wait(30)

    # run twice: the second run replaces the demo project the first made
    again = ok(sh(blocks[0].split('&&')[-1], clone, env, timeout=1500), "mlnb quickstart, again")
    assert f"replacing the demo project an earlier quickstart made at {qs}" in again
    git_clean(qs)

    # the notebook section: every python block, in order, as the cells of one notebook in a real kernel
    import nbformat
    cells = [nbformat.v4.new_code_cell(b.strip()) for b in readme_blocks('python')]
    nb = nbformat.v4.new_notebook(cells=cells, metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}})
    fresh = tmp_path/'fresh'; fresh.mkdir()
    nbformat.write(nb, fresh/'readme.ipynb')
    kenv = dict(env)
    try: socket.create_connection(('127.0.0.1', 8000), timeout=1).close(); kenv['MLNB_SERVE_PORT'] = '0'  # 8000 is taken here
    except OSError: pass
    # the harness's own kernel (JupyterLab's, for a user) talks IPC too, so that any warning in the log is mlnb's
    ok(sh("python -m nbconvert --to notebook --execute --KernelManager.transport=ipc --ExecutePreprocessor.timeout=900 --output done.ipynb readme.ipynb",
          fresh, kenv, timeout=1500), "the README's notebook blocks")
    done = nbformat.read(fresh/'done.ipynb', as_version=4)
    text = lambda c: '\n'.join(o.get('text', '') + json.dumps(o.get('data', {})) for o in c.outputs)
    assert all(o.output_type != 'error' for c in done.cells for o in c.outputs)
    assert 'quickstart' in text(done.cells[0]) and 'tune' in text(done.cells[0])  # %mlnb help
    assert 'stopped http://127.0.0.1:' in text(done.cells[-1])  # %mlnb serve stop: the server was running
    c = MlflowClient(f"sqlite:///{fresh}/my-project/.mlnb/mlflow.db")
    runs = c.search_runs([c.get_experiment_by_name('digits').experiment_id])
    assert len(runs) == 1 and runs[0].data.params == {'C': '0.5'} and runs[0].data.metrics['accuracy'] > 0.9
    assert runs[0].info.status == 'FINISHED'

def test_every_workflow_file_is_yaml():
    "The repository's own workflows and every template's: GitHub rejects a file that does not parse, before any step runs."
    files = sorted(ROOT.glob('.github/workflows/*.y*ml')) + sorted((ROOT/'mlnb'/'project_templates').glob('*/.github/workflows/*.y*ml'))
    assert len(files) >= 2
    for f in files:
        wf = yaml.safe_load(f.read_text())
        assert wf.get('jobs') and all(s.get('run') or s.get('uses') for j in wf['jobs'].values() for s in j['steps']), f
