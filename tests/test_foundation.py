"""The foundation from the outside: the `mlnb` command, `mlnb init`/`config` on real git, DVC and MLflow stores."""
import hashlib, json, os, subprocess, sys, tomllib
from pathlib import Path
import pytest

def tree_state(root):
    "Content hash and mtime of every file below `root`, .git and .dvc included."
    out = {}
    for f in sorted(Path(root).rglob('*')):
        if f.is_file(): out[str(f.relative_to(root))] = (hashlib.md5(f.read_bytes()).hexdigest(), f.stat().st_mtime_ns)
    return out

def one_line_error(r):
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert 'Traceback' not in r.stderr and 'Traceback' not in r.stdout
    return lines[0]

# --- the house -----------------------------------------------------------------------------------------

def test_modules_of_the_flat_house_still_import():
    """Code written against the flat house (`import mlnb.registry`, `from mlnb.quality import check`) gets the module at
    its new place, the same object, with a DeprecationWarning that names it."""
    code = ("import warnings, mlnb\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    import mlnb.registry as r, mlnb.serving.registry as r2\n"
            "assert r is r2 and r.__spec__.name == 'mlnb.serving.registry' and r.promote is mlnb.promote\n"
            "assert any('mlnb.registry is now mlnb.serving.registry' in str(x.message) for x in w), [str(x.message) for x in w]\n"
            "from mlnb.quality import check; from mlnb.data.quality import check as c2; assert check is c2\n"
            "from mlnb.pipelines import step; from mlnb import demo; assert demo.__name__ == 'mlnb.pipeline.demo'\n"
            "import mlnb.widgets_train as wt; assert wt.__name__ == 'mlnb.widgets.train'\n"
            "import importlib; importlib.reload(r)  # the module keeps its own spec\n")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

# --- the command ---------------------------------------------------------------------------------------

def test_help_and_version(mlnb_cli, tmp_path):
    r = mlnb_cli('--help', cwd=tmp_path)
    assert r.returncode == 0 and 'init' in r.stdout and 'config' in r.stdout and 'quickstart' in r.stdout
    r = mlnb_cli('init', '--help', cwd=tmp_path)
    assert r.returncode == 0 and 'usage: mlnb init' in r.stdout
    r = mlnb_cli('help', 'config', cwd=tmp_path)
    assert r.returncode == 0 and 'usage: mlnb config' in r.stdout
    r = mlnb_cli('--version', cwd=tmp_path)
    from mlnb import __version__
    assert r.returncode == 0 and r.stdout.strip() == f"mlnb {__version__}"

def test_unknown_verb_and_option_exit_2(mlnb_cli, tmp_path):
    r = mlnb_cli('no-such-verb', cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ''
    line = one_line_error(r)
    assert "unknown verb 'no-such-verb'" in line and 'init' in line and 'config' in line
    r = mlnb_cli('initt', cwd=tmp_path)
    assert r.returncode == 2 and 'did you mean `init`' in one_line_error(r)
    r = mlnb_cli('init', '--bogus', cwd=tmp_path)
    assert r.returncode == 2 and 'unrecognized arguments: --bogus' in one_line_error(r)
    assert not (tmp_path/'mlnb.toml').exists()

def test_debug_shows_traceback(mlnb_cli, tmp_path):
    f = tmp_path/'afile'; f.write_text('x')
    r = mlnb_cli('--debug', 'init', f, cwd=tmp_path)
    assert r.returncode == 1 and 'Traceback' in r.stderr and 'is a file, not a folder' in r.stderr

# --- init -----------------------------------------------------------------------------------------------

def test_init_twice_changes_nothing_and_tools_read_it(mlnb_cli, tmp_path):
    p = tmp_path/'P'
    r = mlnb_cli('init', p, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert 'dvc: initialised a repository' in r.stderr and 'mlflow: created the tracking store' in r.stderr
    before = tree_state(p)
    r = mlnb_cli('init', p, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert tree_state(p) == before
    # MLflow's own client reads the store
    from mlflow import MlflowClient
    exps = MlflowClient(f"sqlite:///{p}/.mlnb/mlflow.db").search_experiments()
    assert [e.name for e in exps] == ['Default']
    assert exps[0].artifact_location.startswith((p/'.mlnb'/'artifacts').as_uri())
    # DVC's own CLI works there, and sees the local default remote
    env = {**os.environ, 'DVC_NO_ANALYTICS': '1'}
    assert subprocess.run([sys.executable, '-m', 'dvc', 'status'], cwd=p, env=env).returncode == 0
    r = subprocess.run([sys.executable, '-m', 'dvc', 'remote', 'default'], cwd=p, env=env, capture_output=True, text=True)
    assert r.stdout.strip() == 'mlnb'
    # git: a repository, with mlnb's files staged and .mlnb/ ignored
    st = subprocess.run(['git', 'status', '--porcelain'], cwd=p, capture_output=True, text=True).stdout
    assert 'A  mlnb.toml' in st and 'A  .gitignore' in st and '.mlnb' not in st
    # the model-card template, laid for users to edit (staged too); `mlnb card` renders with it
    from mlnb.monitor.cards import TEMPLATE
    assert (p/'templates'/'model_card.md.j2').read_text() == TEMPLATE and 'A  templates/model_card.md.j2' in st
    # mlnb.toml holds every setting at its default
    from mlnb.config import SETTINGS
    from mlnb.core import load_verbs
    load_verbs()
    data = tomllib.loads((p/'mlnb.toml').read_text())
    for name, s in SETTINGS.items():
        sec, key = name.split('.', 1)
        assert data[sec][key] == s.default, name
    assert (p/'.mlnb'/'optuna').is_dir() and (p/'.mlnb'/'artifacts').is_dir()

def test_init_in_existing_git_and_dvc_repo_keeps_their_config(mlnb_cli, tmp_path):
    repo = tmp_path/'repo'; repo.mkdir()
    env = {**os.environ, 'DVC_NO_ANALYTICS': '1'}
    subprocess.run(['git', 'init', '-q'], cwd=repo, check=True)
    subprocess.run(['git', 'config', 'user.name', 'Someone Else'], cwd=repo, check=True)
    (repo/'.gitignore').write_text('*.log\n')
    subprocess.run([sys.executable, '-m', 'dvc', 'init', '-q'], cwd=repo, env=env, check=True)
    subprocess.run([sys.executable, '-m', 'dvc', 'remote', 'add', '-d', 'theirs', '/srv/somewhere'], cwd=repo, env=env, check=True)
    dvc_config = (repo/'.dvc'/'config').read_text()
    git_config = (repo/'.git'/'config').read_text()
    r = mlnb_cli('init', cwd=repo)
    assert r.returncode == 0, r.stderr
    assert 'git: using the repository' in r.stderr and 'dvc: using the repository' in r.stderr
    assert (repo/'.dvc'/'config').read_text() == dvc_config
    assert not (repo/'.dvc'/'config.local').exists()  # they have a default remote: no local one added
    assert (repo/'.git'/'config').read_text() == git_config
    assert (repo/'.gitignore').read_text().startswith('*.log\n') and '.mlnb/' in (repo/'.gitignore').read_text()

def test_init_in_a_subfolder_of_a_git_repo_uses_dvc_subdir(mlnb_cli, tmp_path):
    subprocess.run(['git', 'init', '-q', str(tmp_path/'mono')], check=True)
    p = tmp_path/'mono'/'ml'
    r = mlnb_cli('init', p, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert '(--subdir)' in r.stderr and (p/'.dvc').is_dir() and not (tmp_path/'mono'/'.git'/'..'/'.dvc').exists()
    assert not (p/'.git').exists()
    r = subprocess.run([sys.executable, '-m', 'dvc', 'status'], cwd=p, env={**os.environ, 'DVC_NO_ANALYTICS': '1'})
    assert r.returncode == 0

# --- bad input ------------------------------------------------------------------------------------------

def test_init_on_a_file(mlnb_cli, tmp_path):
    f = tmp_path/'afile'; f.write_text('x')
    r = mlnb_cli('init', f, cwd=tmp_path)
    assert r.returncode == 1 and 'is a file, not a folder' in one_line_error(r)
    assert f.read_text() == 'x' and sorted(p.name for p in tmp_path.iterdir()) == ['afile']

def test_init_with_malformed_toml_names_file_and_line(mlnb_cli, tmp_path):
    p = tmp_path/'P'; p.mkdir()
    (p/'mlnb.toml').write_text('[tracking]\nuri = "sqlite:///x.db"\nexperiment "oops"\n')
    r = mlnb_cli('init', p, cwd=tmp_path)
    line = one_line_error(r)
    assert r.returncode == 1 and f"{p/'mlnb.toml'} line 3" in line and 'hint:' in line
    assert sorted(x.name for x in p.iterdir()) == ['mlnb.toml']  # nothing half-written
    r = mlnb_cli('config', cwd=p)
    assert r.returncode == 1 and 'line 3' in one_line_error(r)

def test_unknown_setting_and_bad_env(mlnb_cli, tmp_path):
    p = tmp_path/'P'; p.mkdir()
    (p/'mlnb.toml').write_text('[tracking]\nexperimnt = "x"\n')
    r = mlnb_cli('config', cwd=p)
    assert r.returncode == 1 and "unknown setting 'tracking.experimnt'" in one_line_error(r) and "tracking.experiment" in r.stderr
    (p/'mlnb.toml').write_text('')
    r = mlnb_cli('config', cwd=p, env={'MLNB_TRACKING_EXPERIMENT': 'from-env'})
    import re
    assert r.returncode == 0 and re.search(r'"from-env"\s+\[env MLNB_TRACKING_EXPERIMENT\]', r.stdout), r.stdout

@pytest.fixture
def readonly_dir(tmp_path):
    d = tmp_path/'ro'; d.mkdir()
    if os.geteuid() == 0:  # root ignores permission bits: use a read-only mount
        r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', str(d)], capture_output=True)
        if r.returncode: pytest.skip(f"cannot mount a read-only tmpfs here: {r.stderr.decode().strip()}")
        yield d
        subprocess.run(['umount', str(d)])
    else:
        d.chmod(0o555); yield d; d.chmod(0o755)

def test_init_on_a_read_only_folder(mlnb_cli, readonly_dir):
    r = mlnb_cli('init', readonly_dir/'proj', cwd=readonly_dir.parent)
    line = one_line_error(r)
    assert r.returncode == 1 and 'cannot write to' in line and 'hint:' in line
    assert not (readonly_dir/'proj').exists()

# --- config and project discovery ---------------------------------------------------------------------

def test_config_sources_and_discovery_from_below(mlnb_cli, project):
    (project.root/'mlnb.toml').write_text((project.root/'mlnb.toml').read_text().replace('experiment = "Default"', 'experiment = "exp1"'))
    deep = project.root/'nbs'/'sub'; deep.mkdir(parents=True)
    r = mlnb_cli('config', cwd=deep, env={'MLNB_TUNING_STORAGE': 'postgresql://u@127.0.0.1/optuna'})
    assert r.returncode == 0, r.stderr
    assert f"settings from {project.root/'mlnb.toml'}" in r.stdout
    import re
    assert re.search(r'tracking\.experiment\s+"exp1"\s+\[mlnb\.toml\]', r.stdout), r.stdout
    assert re.search(r'tuning\.storage\s+"postgresql://u@127.0.0.1/optuna"\s+\[env MLNB_TUNING_STORAGE\]', r.stdout), r.stdout
    r = mlnb_cli('config', 'tracking.experiment', cwd=deep)
    assert r.stdout.strip() == 'exp1'
    r = mlnb_cli('config', 'tracking.nope', cwd=deep)
    assert r.returncode == 1 and "unknown setting 'tracking.nope'" in one_line_error(r)

def test_config_outside_a_project_shows_defaults(mlnb_cli, tmp_path):
    r = mlnb_cli('config', cwd=tmp_path)
    assert r.returncode == 0 and 'no project' in r.stdout and '[default]' in r.stdout

def test_mlnb_project_env_pointing_nowhere(mlnb_cli, tmp_path):
    r = mlnb_cli('config', cwd=tmp_path, env={'MLNB_PROJECT': str(tmp_path/'nope')})
    assert r.returncode == 1 and 'MLNB_PROJECT=' in one_line_error(r) and 'mlnb init' in r.stderr
