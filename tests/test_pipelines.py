"""Pipelines from the outside: `mlnb step`, `mlnb pipeline add`, `mlnb run` on a real DVC repo with real kernels."""
import os, subprocess, sys
from pathlib import Path
import nbformat, pytest

def make_nb(path, params_src, body, kernelspec=True):
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell(params_src); p.metadata['tags'] = ['parameters']
    nb.cells = [p] + [nbformat.v4.new_code_cell(b) for b in ([body] if isinstance(body, str) else body)]
    if kernelspec: nb.metadata['kernelspec'] = dict(name='python3', display_name='Python 3', language='python')
    nbformat.write(nb, str(path)); return Path(path)

COUNT = "import pathlib; c = pathlib.Path('counts'); c.mkdir(exist_ok=True); (c/'{name}').open('a').write('x')"

@pytest.fixture
def pipeline(project, mlnb_cli):
    "prepare -> train -> evaluate, each counting its executions in counts/NAME."
    root = project.root
    (root/'params.yaml').write_text('prepare:\n  n: 10\ntrain:\n  k: 2\nevaluate:\n  threshold: 0.5\n')
    make_nb(root/'prepare.ipynb', 'n = 1', [COUNT.format(name='prepare'), "open('data.txt','w').write(str(n))"])
    make_nb(root/'train.ipynb', 'k = 1', [COUNT.format(name='train'), "open('model.txt','w').write(str(int(open('data.txt').read()) * k))"])
    make_nb(root/'evaluate.ipynb', 'threshold = 0.0', [COUNT.format(name='evaluate'),
            "import json; json.dump({'score': int(open('model.txt').read()), 'threshold': threshold}, open('metrics.json','w'))"])
    for args in (['prepare.ipynb', '--outs', 'data.txt', '--params', 'prepare'],
                 ['train.ipynb', '--deps', 'data.txt', '--outs', 'model.txt', '--params', 'train'],
                 ['evaluate.ipynb', '--deps', 'model.txt', '--metrics', 'metrics.json', '--params', 'evaluate']):
        r = mlnb_cli('pipeline', 'add', *args, cwd=root)
        assert r.returncode == 0, r.stderr
    return root

def counts(root): return {p.name: len(p.read_text()) for p in sorted((root/'counts').iterdir())} if (root/'counts').exists() else {}

def test_run_caches_and_reruns_only_dependents(pipeline, mlnb_cli):
    root = pipeline
    r = mlnb_cli('run', cwd=root)
    assert r.returncode == 0, r.stderr
    assert counts(root) == {'evaluate': 1, 'prepare': 1, 'train': 1}
    assert (root/'model.txt').read_text() == '20' and 'ran 3 stage(s)' in r.stdout
    assert 'step.cell' in r.stderr  # progress streamed cell by cell
    r = mlnb_cli('run', cwd=root)
    assert r.returncode == 0 and counts(root) == {'evaluate': 1, 'prepare': 1, 'train': 1}
    assert 'ran 0 stage(s), 3 up to date' in r.stdout
    r = mlnb_cli('run', '--set', 'train.k=3', cwd=root)
    assert r.returncode == 0, r.stderr
    assert counts(root) == {'evaluate': 2, 'prepare': 1, 'train': 2} and (root/'model.txt').read_text() == '30'
    assert 'k: 3' in (root/'params.yaml').read_text()
    r = mlnb_cli('run', '--set', 'evaluate.threshold=0.9', cwd=root)
    assert counts(root) == {'evaluate': 3, 'prepare': 1, 'train': 2}
    r = mlnb_cli('run', '--force', cwd=root)
    assert counts(root) == {'evaluate': 4, 'prepare': 2, 'train': 3}
    # DVC's own tools read the pipeline
    env = {**os.environ, 'DVC_NO_ANALYTICS': '1'}
    dag = subprocess.run([sys.executable, '-m', 'dvc', 'dag', '--md'], cwd=root, env=env, capture_output=True, text=True)
    assert dag.returncode == 0 and 'prepare' in dag.stdout and 'evaluate' in dag.stdout
    st = subprocess.run([sys.executable, '-m', 'dvc', 'status'], cwd=root, env=env, capture_output=True, text=True)
    assert st.returncode == 0 and 'up to date' in st.stdout
    r = mlnb_cli('pipeline', 'show', cwd=root)
    assert r.returncode == 0 and r.stdout.count('up to date') == 3

def test_plain_dvc_repro_runs_mlnb_steps(pipeline):
    "The stage commands are ordinary `mlnb step` commands: DVC's own `dvc repro` runs them too."
    env = {**os.environ, 'DVC_NO_ANALYTICS': '1', 'PATH': f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    r = subprocess.run([sys.executable, '-m', 'dvc', 'repro'], cwd=pipeline, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert counts(pipeline) == {'evaluate': 1, 'prepare': 1, 'train': 1} and (pipeline/'model.txt').read_text() == '20'

def test_failing_step_names_its_cell_and_rerun_resumes(pipeline, mlnb_cli):
    root = pipeline
    make_nb(root/'train.ipynb', 'k = 1', [COUNT.format(name='train'), "import os\nif not os.path.exists('fixed'): raise RuntimeError('bad batch')",
                                          "open('model.txt','w').write(str(int(open('data.txt').read()) * k))"])
    r = mlnb_cli('run', cwd=root)
    assert r.returncode == 1
    line = [l for l in r.stderr.splitlines() if l.startswith('mlnb: error:')][0]
    assert "train.ipynb failed in cell [" in line and "`import os`" in line and 'RuntimeError: bad batch' in line
    assert 'partial notebook with the error is at' in line
    partial = Path(line.split('is at ')[1].rstrip(')'))
    assert partial.exists() and 'bad batch' in partial.read_text()
    assert (root/'data.txt').exists() and counts(root) == {'prepare': 1, 'train': 1}
    (root/'fixed').write_text('')
    r = mlnb_cli('run', cwd=root)
    assert r.returncode == 0, r.stderr
    assert counts(root) == {'evaluate': 1, 'prepare': 1, 'train': 2}  # prepare was not run again

def test_bad_pipeline_inputs(project, mlnb_cli):
    root = project.root
    bare = nbformat.v4.new_notebook(); bare.cells = [nbformat.v4.new_code_cell('x = 1')]
    nbformat.write(bare, str(root/'bare.ipynb'))
    r = mlnb_cli('step', 'bare.ipynb', cwd=root)
    assert r.returncode == 1 and "no cell tagged 'parameters'" in r.stderr and '--add-parameters' in r.stderr
    r = mlnb_cli('step', 'bare.ipynb', '--add-parameters', cwd=root)
    assert r.returncode == 0
    r = mlnb_cli('step', 'bare.ipynb', '-p', 'lr', '0.1', cwd=root)
    assert r.returncode == 1 and 'declares no parameter lr' in r.stderr
    r = mlnb_cli('step', 'missing.ipynb', cwd=root)
    assert r.returncode == 1 and 'no notebook at missing.ipynb' in r.stderr
    r = mlnb_cli('run', cwd=root)
    assert r.returncode == 1 and 'has no pipeline stages' in r.stderr
    # a step whose declared output is not produced
    make_nb(root/'lazy.ipynb', 'n = 1', 'x = n')
    assert mlnb_cli('pipeline', 'add', 'lazy.ipynb', '--outs', 'never.txt', cwd=root).returncode == 0
    r = mlnb_cli('run', cwd=root)
    assert r.returncode == 1 and 'never.txt' in r.stderr and 'Traceback' not in r.stderr
    # a dependency cycle
    make_nb(root/'a.ipynb', 'n = 1', 'x = n'); make_nb(root/'b.ipynb', 'n = 1', 'x = n')
    (root/'dvc.yaml').unlink()
    assert mlnb_cli('pipeline', 'add', 'a.ipynb', '--deps', 'b.out', '--outs', 'a.out', cwd=root).returncode == 0
    r = mlnb_cli('pipeline', 'add', 'b.ipynb', '--deps', 'a.out', '--outs', 'b.out', cwd=root)
    assert r.returncode == 1 and 'cycle' in r.stderr.lower() and len(r.stderr.strip().splitlines()) == 1
    # outside a project
    r = mlnb_cli('run', cwd=root.parent)
    assert r.returncode == 1 and 'no mlnb project at or above' in r.stderr and 'mlnb init' in r.stderr

def test_step_params_from_yaml_and_cli_values(project, mlnb_cli):
    root = project.root
    make_nb(root/'s.ipynb', 'lr = 0.1\nname = "a"\nflag = False', "open('o.txt','w').write(f'{lr!r} {name!r} {flag!r}')", kernelspec=False)
    (root/'params.yaml').write_text('train:\n  lr: 0.001\n  name: b\n')
    r = mlnb_cli('step', 's.ipynb', '--params-from', 'params.yaml:train', '-p', 'flag', 'true', cwd=root)
    assert r.returncode == 0, r.stderr
    assert (root/'o.txt').read_text() == "0.001 'b' True"
    out = Path(r.stdout.strip().split(' -> ')[-1])
    assert out.parent == root/'.mlnb'/'runs' and out.exists()

def test_step_runs_name_their_notebook_and_nest(project, mlnb_cli):
    """The run of a step and the runs its notebook opens (a `train` run) record the notebook's path in the project (not
    `ipykernel_launcher.py`), the executed copy (an artifact of the step's run) and the git commit, and the runs inside
    nest in the step's run: with `mlnb step` (a fresh kernel) and with `mlnb run` (a pooled kernel, started before it)."""
    import mlflow
    from mlflow import MlflowClient
    root = project.root
    (root/'nbs').mkdir()
    make_nb(root/'nbs'/'train.ipynb', 'k = 1', "import mlnb\nwith mlnb.run(name='train') as r: mlnb.log(acc=k / 2)\n"
                                                "open('run.txt', 'w').write(r.id)")
    git = lambda *a: subprocess.run(['git', '-c', 'user.email=t@t', '-c', 'user.name=t', *a], cwd=root, check=True,
                                    capture_output=True, text=True).stdout.strip()
    git('add', '-A'); git('commit', '-qm', 'a step')
    commit = git('rev-parse', 'HEAD')
    c = MlflowClient(project.tracking_uri)
    def check():
        inner = c.get_run((root/'run.txt').read_text())
        step_run = c.get_run(inner.data.tags['mlflow.parentRunId'])
        assert (inner.info.run_name, step_run.info.run_name) == ('train', 'step train')
        executed = step_run.data.tags['mlnb.notebook.executed']
        assert executed.startswith(f"runs:/{step_run.info.run_id}/notebooks/") and executed.endswith('-train.ipynb')
        for run in (step_run, inner):
            t = run.data.tags
            assert (t['mlnb.notebook'], t['mlflow.source.name'], t['mlflow.source.type']) == ('nbs/train.ipynb', 'nbs/train.ipynb', 'NOTEBOOK'), t
            assert t['mlnb.notebook.executed'] == executed and t['mlnb.git.commit'] == commit
        copy = Path(mlflow.artifacts.download_artifacts(executed, dst_path=str(root/'.mlnb'/'dl'), tracking_uri=project.tracking_uri))
        text = copy.read_text()
        assert 'mlnb.log(acc=k / 2)' in text and '"execution_count": 2' in text and '_os.environ' not in text  # the setup left no trace
        return step_run.data.tags.get('mlflow.parentRunId')
    r = mlnb_cli('step', 'nbs/train.ipynb', '-p', 'k', '2', cwd=root)
    assert r.returncode == 0, r.stderr
    assert check() is None  # `mlnb step`: the step's run is a top-level run
    assert mlnb_cli('pipeline', 'add', 'nbs/train.ipynb', '--outs', 'run.txt', cwd=root).returncode == 0
    r = mlnb_cli('run', cwd=root)
    assert r.returncode == 0, r.stderr
    assert c.get_run(check()).info.run_name == 'pipeline'  # the pipeline's run holds the step's, which holds `train`
