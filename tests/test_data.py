"""`mlnb.data.versions` and `mlnb.data.quality` on real projects: real git, real DVC with the project's local remote, the real CLI."""
import hashlib, json, os, shutil, subprocess, sys
from pathlib import Path
import pandas as pd
import pytest

ENV = {'DVC_NO_ANALYTICS': '1', 'GIT_AUTHOR_NAME': 'mlnb test', 'GIT_AUTHOR_EMAIL': 'test@mlnb.local',
       'GIT_COMMITTER_NAME': 'mlnb test', 'GIT_COMMITTER_EMAIL': 'test@mlnb.local'}

@pytest.fixture(scope='module')
def base_project(tmp_path_factory):
    "One project made by `mlnb.project.init`, copied for each test (init takes seconds)."
    from mlnb.project import init
    prj = init(tmp_path_factory.mktemp('base')/'proj')
    return prj.root

@pytest.fixture
def prj(base_project, tmp_path, monkeypatch):
    "A fresh copy of the base project, the working directory inside it, a git identity in the environment."
    root = tmp_path/'proj'
    shutil.copytree(base_project, root, symlinks=True)
    for k, v in ENV.items(): monkeypatch.setenv(k, v)
    monkeypatch.delenv('MLNB_PROJECT', raising=False)
    monkeypatch.chdir(root)
    (root/'data').mkdir()
    from mlnb.config import Project
    return Project(root)

def cli(*args, cwd=None, env=None):
    e = {**os.environ, **ENV, **(env or {})}
    return subprocess.run([sys.executable, '-m', 'mlnb.cli', *map(str, args)], cwd=cwd, env=e, capture_output=True, text=True, timeout=300)

def dvc(*args, cwd):
    return subprocess.run([sys.executable, '-m', 'dvc', *args], cwd=cwd, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=300)

def git(*args, cwd):
    return subprocess.run(['git', *args], cwd=cwd, capture_output=True, text=True).stdout

def md5(p): return hashlib.md5(Path(p).read_bytes()).hexdigest()

def repo_state(root:Path) -> dict:
    "Everything a failed add must leave as it was: files outside .dvc/cache and .mlnb, the git index, HEAD, refs, tags."
    files = {}
    for p in sorted(root.rglob('*')):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel != '.git/index' and not rel.startswith(('.dvc/cache/', '.dvc/tmp/', '.mlnb/', '.git/objects/', '.git/logs/')):
            files[rel] = md5(p)
    return dict(files=files, index=git('ls-files', '--stage', cwd=root), head=git('rev-parse', '-q', '--verify', 'HEAD', cwd=root), status=git('status', '--porcelain', '--untracked-files=all', cwd=root),
                refs=git('for-each-ref', cwd=root))

def table(n=100, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    return pd.DataFrame({'id': range(n), 'age': rng.integers(18, 90, n), 'income': rng.normal(50, 10, n).round(3),
                         'city': rng.choice(['paris', 'rome', 'oslo'], n), 'y': rng.integers(0, 2, n)})

# ---------------------------------------------------------------- acceptance

def test_add_v1_v2_checkout_v1_is_byte_identical_and_status_agrees_with_dvc(prj):
    f = prj.root/'data/train.csv'
    table(50).to_csv(f, index=False)
    v1 = f.read_bytes()
    r = cli('data', 'add', 'data/train.csv', '--tag', 'v1', '-m', 'first')
    assert r.returncode == 0, r.stderr
    assert 'new version' in r.stdout and 'tag v1' in r.stdout and 'pushed' in r.stdout
    table(80, seed=1).to_csv(f, index=False)
    v2 = f.read_bytes()
    assert cli('data', 'add', 'data/train.csv', '--tag', 'v2').returncode == 0
    assert git('tag', cwd=prj.root).split() == ['v1', 'v2']
    assert git('log', '--format=%s', cwd=prj.root).splitlines()[:2] == ['data: update data/train.csv (v2)', 'first']
    # the remote has both versions
    remote = prj.root/'.mlnb/dvc-remote/files/md5'
    assert {p.parent.name + p.name for p in remote.rglob('*') if p.is_file()} >= {hashlib.md5(v1).hexdigest(), hashlib.md5(v2).hexdigest()}

    r = cli('data', 'checkout', 'data/train.csv@v1')
    assert r.returncode == 0, r.stderr
    assert f.read_bytes() == v1
    st = cli('data', 'status')
    assert st.returncode == 0 and 'data/train.csv  clean  modified' in st.stdout  # data matches its .dvc file; the .dvc file now differs from HEAD
    ds = dvc('status', '--json', cwd=prj.root)
    assert ds.returncode == 0 and json.loads(ds.stdout) == {}
    from mlnb.data import status
    assert status().dvc == json.loads(ds.stdout)

    f.write_text('id,age,income,city,y\n0,1,2,x,0\n')  # now the workspace differs: both say so
    ds = json.loads(dvc('status', '--json', cwd=prj.root).stdout)
    assert ds == {'data/train.csv.dvc': [{'changed outs': {'data/train.csv': 'modified'}}]}
    s = status()
    assert s.dvc == ds and [(x['path'], x['state']) for x in s.rows] == [('data/train.csv', 'modified')] and not s.clean
    assert cli('data', 'checkout', 'data/train.csv@v2', '--force').returncode == 0
    assert f.read_bytes() == v2

def test_add_missing_path_exits_nonzero_with_one_line_and_repo_unchanged(prj):
    before = repo_state(prj.root)
    r = cli('data', 'add', 'missing.csv')
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert lines == ['mlnb: error: no such file or folder: missing.csv (hint: check the path (it is relative to the current folder))']
    assert 'Traceback' not in r.stderr + r.stdout
    assert repo_state(prj.root) == before

def test_gate_flags_each_injected_defect_and_passes_clean_data(prj):
    from mlnb.data import add, check, require_clean, profile_of
    from mlnb.data.quality import QualityError
    df = table(200)
    df.to_csv('data/train.csv', index=False)
    res = add('data/train.csv', tag='v1')
    assert (prj.dir/'profiles'/f'{res.md5}.json').exists()  # stored beside the version
    clean = table(200).sample(frac=0.5, random_state=1)
    assert check(clean, 'data/train.csv@v1') == []
    assert require_clean(clean, 'data/train.csv@v1') == []
    defects = {
        'nulls': lambda d: d.assign(income=d.income.mask(d.index % 7 == 0)),
        'range': lambda d: d.assign(age=d.age.where(d.index != d.index[0], 500)),
        'categories': lambda d: d.assign(city=d.city.where(d.index != d.index[0], 'lima')),
        'schema': lambda d: d.drop(columns=['income']),
        'duplicates': lambda d: pd.concat([d, d.iloc[:5]]),
    }
    for rule, make in defects.items():
        bad = make(df.copy())
        found = check(bad, 'data/train.csv@v1')
        assert {x.rule for x in found} == {rule}, (rule, found)
        x = found[0]
        assert x.severity == 'error' and x.observed and x.expected
        if rule != 'duplicates': assert x.column == {'nulls': 'income', 'range': 'age', 'categories': 'city', 'schema': 'income'}[rule]
        with pytest.raises(QualityError, match=rf"data failed the quality gate with 1 error\(s\): .*{rule}: observed"):
            require_clean(bad, 'data/train.csv@v1')
    # severities and thresholds come from mlnb.toml
    toml = prj.root/'mlnb.toml'
    toml.write_text(toml.read_text().replace('range = "error"', 'range = "warn"'))
    bad = defects['range'](df.copy())
    assert [(x.rule, x.severity) for x in require_clean(bad, 'data/train.csv@v1')] == [('range', 'warn')]
    # and the CLI: `mlnb data check` fails on errors with the findings in one line
    df.drop(columns=['city']).to_csv('data/new.csv', index=False)
    r = cli('data', 'check', 'data/new.csv', '--against', 'data/train.csv@v1')
    errors = [l for l in r.stderr.splitlines() if not l.startswith('[mlnb] ')]  # progress lines go to stderr too
    assert r.returncode == 1 and len(errors) == 1 and 'city: schema: observed column missing, expected a string column' in errors[0]

# ---------------------------------------------------------------- a failed add leaves no trace

def test_failed_commit_leaves_repo_exactly_as_it_was(prj):
    from mlnb.data import add, DataError
    table().to_csv('data/train.csv', index=False)
    add('data/train.csv', tag='v1')
    table(120, seed=3).to_csv('data/train.csv', index=False)
    hook = prj.root/'.git/hooks/pre-commit'
    hook.write_text('#!/bin/sh\necho "policy: no commits today" >&2\nexit 1\n'); hook.chmod(0o755)
    before = repo_state(prj.root)
    with pytest.raises(DataError, match='git commit failed: policy: no commits today'):
        add('data/train.csv', tag='v2')
    assert repo_state(prj.root) == before
    assert 'v2' not in git('tag', cwd=prj.root).split()

def test_failed_push_of_a_new_path_leaves_no_dvc_file(prj):
    from mlnb.data import add, DataError
    (prj.root/'data/model.bin').write_bytes(os.urandom(1000))
    blocker = prj.root.parent/'not-a-folder'; blocker.write_text('x')
    dvc('remote', 'modify', '--local', 'mlnb', 'url', str(blocker/'remote'), cwd=prj.root)
    before = repo_state(prj.root)
    with pytest.raises(DataError, match='dvc push of data/model.bin failed'):
        add('data/model.bin')
    assert repo_state(prj.root) == before
    assert not (prj.root/'data/model.bin.dvc').exists() and not (prj.root/'data/.gitignore').exists()
    r = add('data/model.bin', push=False)  # without pushing it works
    assert not r.pushed and r.commit

# ---------------------------------------------------------------- bad inputs, each one line with a hint

def test_bad_inputs_are_one_line_errors_with_hints(prj, tmp_path):
    from mlnb.data import add, load, checkout, log, DataError
    before = repo_state(prj.root)
    (prj.root/'data/bad.csv').write_text('a,b\n1,2\n3,4,5,6\n')
    (prj.root/'data/bin.csv').write_bytes(b'\xff\xfe\x00\x81garbage\x00' * 10)
    (prj.root/'data/bad.parquet').write_bytes(b'PAR1 not really parquet')
    (prj.root/'data/empty.csv').write_text('')
    outside = tmp_path/'outside.csv'; outside.write_text('a\n1\n')
    (prj.root/'.gitignore').write_text((prj.root/'.gitignore').read_text() + 'scratch/\n')
    (prj.root/'scratch').mkdir(); (prj.root/'scratch/x.csv').write_text('a\n1\n')
    (prj.root/'notes.txt').write_text('hi'); git('add', 'notes.txt', cwd=prj.root)
    before = repo_state(prj.root)
    cases = [
        ('data/bad.csv', r"cannot read data/bad.csv as csv: Error tokenizing data.*\(hint: check that the file is valid csv"),
        ('data/bin.csv', r"cannot read data/bin.csv as csv"),
        ('data/bad.parquet', r"cannot read data/bad.parquet as parquet.*\(hint: "),
        ('data/empty.csv', r"cannot read data/empty.csv as csv: No columns to parse"),
        (str(outside), r"outside.csv is outside the project at .*\(hint: copy or move it into the project first\)"),
        ('scratch/x.csv', r"scratch/x.csv is ignored by git \(.gitignore:\d+:scratch/\) \(hint: remove that .gitignore rule"),
        ('notes.txt', r"notes.txt is tracked by git \(hint: stop tracking it with git first: git rm -r --cached notes.txt\)"),
        ('.mlnb/mlflow.db', r"inside mlnb's, git's or DVC's own folder"),
    ]
    for path, msg in cases:
        with pytest.raises(DataError, match=msg) as e: add(path)
        assert '\n' not in str(e.value) and e.value.hint
    assert repo_state(prj.root) == before
    # the same through the CLI: exit 1, one line, no traceback
    r = cli('data', 'add', 'data/bad.parquet')
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and 'Traceback' not in r.stderr
    # unknown tag or rev, untracked path
    table().to_csv('data/train.csv', index=False); add('data/train.csv', tag='v1')
    for call in (lambda: load('data/train.csv@v9'), lambda: checkout('data/train.csv@nope'), lambda: log('data/other.csv')):
        with pytest.raises(DataError, match=r"unknown tag or rev '(v9|nope)'.*known tags: v1|has no versions") as e: call()
        assert e.value.hint
    with pytest.raises(DataError, match=r"data/bad.csv is not tracked by DVC at v1"): load('data/bad.csv@v1')
    r = cli('data', 'checkout', 'data/train.csv@v9')
    assert r.returncode == 1 and r.stderr.strip() == "mlnb: error: unknown tag or rev 'v9' (hint: known tags: v1; `mlnb data log PATH` lists a path's versions)"
    r = cli('data', 'bogus')
    assert r.returncode == 2 and "invalid choice: 'bogus'" in r.stderr

def test_checkout_refuses_a_dirty_tree(prj):
    from mlnb.data import add, checkout, DataError
    f = prj.root/'data/train.csv'
    table().to_csv(f, index=False); add('data/train.csv', tag='v1')
    table(30, seed=2).to_csv(f, index=False); add('data/train.csv', tag='v2')
    f.write_text('age,income,city,y\n1,1,x,1\n')  # unsaved change
    r = cli('data', 'checkout', 'data/train.csv@v1')
    assert r.returncode == 1 and f.read_text() == 'age,income,city,y\n1,1,x,1\n'
    assert r.stderr.strip().startswith('mlnb: error: refusing to check out data/train.csv@v1: data/train.csv has changes that no version saved (hint: `mlnb data add data/train.csv`')
    # a staged but uncommitted version counts as unsaved too
    add('data/train.csv', commit=False)
    with pytest.raises(DataError, match="records a version that is not committed"): checkout('data/train.csv@v1')
    checkout('data/train.csv@v1', force=True)
    assert md5(f) == hashlib.md5(table().to_csv(index=False).encode()).hexdigest()

# ---------------------------------------------------------------- loading versions with lineage

def test_load_reads_versions_from_the_remote_without_touching_the_workspace(prj):
    from mlnb.core import events
    from mlnb.data import add, load
    f = prj.root/'data/train.parquet'
    table(40).to_parquet(f); r1 = add('data/train.parquet', tag='v1')
    table(60, seed=5).to_parquet(f); add('data/train.parquet', tag='v2')
    shutil.rmtree(prj.root/'.dvc/cache')  # only the remote has the bytes now
    ws = f.read_bytes()
    seen = []
    with events.listening('data.loaded', seen.append):
        df = load('data/train.parquet@v1')
    assert len(df) == 40 and df.equals(table(40))
    assert f.read_bytes() == ws
    ev = seen[0].data
    assert (ev['path'], ev['rev'], ev['md5'], ev['rows']) == ('data/train.parquet', 'v1', r1.md5, 40)
    assert ev['commit'] == git('rev-parse', 'v1^{commit}', cwd=prj.root).strip() and 'loaded data/train.parquet@v1' in ev['msg']
    os.chdir(prj.root/'.mlnb')  # from a sub-folder (a notebook in nbs/), paths relative to the project root work too
    assert len(load('data/train.parquet@v1')) == 40
    os.chdir(prj.root)
    # checkout too fetches from the remote what the cache lacks
    from mlnb.data import checkout
    shutil.rmtree(prj.root/'.dvc/cache')
    checkout('data/train.parquet@v1')
    assert md5(f) == r1.md5 and pd.read_parquet(f).equals(table(40))

def test_load_jsonl_other_files_and_folders(prj):
    from mlnb.data import add, load, log, diff
    (prj.root/'data/events.jsonl').write_text('{"a": 1, "b": "x"}\n{"a": 2, "b": "y"}\n')
    add('data/events.jsonl', tag='j1')
    assert load('data/events.jsonl@j1').to_dict('list') == {'a': [1, 2], 'b': ['x', 'y']}
    (prj.root/'data/model.bin').write_bytes(b'weights-v1'); add('data/model.bin', tag='m1')
    (prj.root/'data/model.bin').write_bytes(b'weights-v2'); add('data/model.bin', tag='m2')
    p = load('data/model.bin@m1')
    assert isinstance(p, Path) and p.read_bytes() == b'weights-v1'
    d = diff('data/model.bin@m1', 'data/model.bin@m2')
    assert not d.same and not d.table and 'md5' in str(d)
    imgs = prj.root/'data/images'; imgs.mkdir()
    for i in range(5): (imgs/f'{i}.txt').write_text(str(i))
    r1 = add('data/images', tag='i1')
    assert r1.nfiles == 5 and r1.md5.endswith('.dir')
    (imgs/'0.txt').write_text('changed'); (imgs/'5.txt').write_text('new'); (imgs/'1.txt').unlink()
    add('data/images', tag='i2')
    d = diff('data/images@i1', 'data/images@i2')
    assert d.files == {'added': ['data/images/5.txt'], 'deleted': ['data/images/1.txt'], 'modified': ['data/images/0.txt']}
    old = load('data/images@i1')
    assert sorted(x.name for x in old.iterdir()) == ['0.txt', '1.txt', '2.txt', '3.txt', '4.txt'] and (old/'0.txt').read_text() == '0'
    lg = log('data/images')
    assert [v.tags for v in lg] == [['i2'], ['i1']] and lg[0].nfiles == 5

def test_log_diff_and_profile_through_cli_and_magic(prj, ip):
    df = table(30)
    df.to_csv('data/train.csv', index=False)
    assert cli('data', 'add', 'data/train.csv', '-t', 'v1').returncode == 0
    df.assign(score=1.5).drop(columns=['city']).astype({'age': float}).iloc[:25].to_csv('data/train.csv', index=False)
    assert cli('data', 'add', 'data/train.csv', '-t', 'v2').returncode == 0
    r = cli('data', 'log', 'data/train.csv')
    lines = r.stdout.strip().splitlines()
    assert lines[0].split() == ['rev', 'tag', 'date', 'size', 'md5', 'message'] and ' v2 ' in lines[1] and ' v1 ' in lines[2]
    r = cli('data', 'diff', 'data/train.csv@v1', 'data/train.csv@v2')
    assert r.returncode == 0
    assert 'rows 30 -> 25 (+0 -5)' in r.stdout and 'columns added: score' in r.stdout and 'columns removed: city' in r.stdout
    r = cli('data', 'profile', 'data/train.csv@v1')
    assert r.returncode == 0 and r.stdout.startswith('profile of data/train.csv@v1: 30 rows × 5 columns')
    # the magic returns the same objects, with HTML fallbacks
    ip.run_cell('import os')
    lg = ip.run_line_magic('mlnb', 'data log data/train.csv')
    assert [v.tags for v in lg] == [['v2'], ['v1']] and '<table' in lg._repr_html_()
    d = ip.run_line_magic('mlnb', 'data diff data/train.csv@v1 data/train.csv@v2')
    assert d.rows_removed == 5 and d.columns_retyped == [('age', 'int64', 'float64')] and d.rows_added == 0
    st = ip.run_line_magic('mlnb', 'data status')
    assert st.clean and 'data status (clean)' in st._repr_html_()

def test_magic_errors_are_one_line(prj, ip, capsys):
    res = ip.run_cell('%mlnb data add missing.csv')
    assert not res.success
    out = capsys.readouterr()
    text = out.out + out.err
    assert 'DataError: no such file or folder: missing.csv (hint: ' in text and 'Traceback' not in text

def test_big_tables_are_validated_cheaply_and_profiled_on_demand(prj):
    from mlnb.data import add, profile_of, DataError
    table(50).to_csv('data/train.csv', index=False)
    (prj.root/'data/bad.csv').write_text('a,b\n1,2\n3,4,5,6\n')
    r = cli('data', 'add', 'data/train.csv', '--tag', 'v1', env={'MLNB_DATA_PROFILE_MAX_MB': '0'})
    assert r.returncode == 0, r.stderr
    md5_v1 = git('show', 'v1:data/train.csv.dvc', cwd=prj.root).split('md5: ')[1].split()[0]
    assert not (prj.dir/'profiles'/f'{md5_v1}.json').exists()  # too big to profile at add time
    assert profile_of('data/train.csv@v1').rows == 50 and (prj.dir/'profiles'/f'{md5_v1}.json').exists()
    r = cli('data', 'add', 'data/bad.csv', env={'MLNB_DATA_PROFILE_MAX_MB': '0'})
    assert r.returncode == 1 and 'cannot read data/bad.csv as csv' in r.stderr  # still refused: its first rows are parsed

def test_auto_commit_setting(prj):
    from mlnb.data import add, DataError
    table().to_csv('data/train.csv', index=False)
    r = cli('data', 'add', 'data/train.csv', env={'MLNB_DATA_AUTO_COMMIT': '0'})
    assert r.returncode == 0 and 'commit' not in r.stdout
    assert git('status', '--porcelain', 'data', cwd=prj.root).split('\n')[:2] == ['A  data/.gitignore', 'A  data/train.csv.dvc']
    assert not git('rev-parse', '-q', '--verify', 'HEAD', cwd=prj.root)
    with pytest.raises(DataError, match='--tag needs a commit'): add('data/train.csv', tag='v1', commit=False)

# ---------------------------------------------------------------- push of a folder version, git-ignore rules, import order

def test_added_folder_is_complete_on_the_remote_for_dvcs_own_clients(prj):
    "add pushes only the new version's objects (not the whole workspace index): every file of the folder must be there."
    from mlnb.data import add, load
    imgs = prj.root/'data/images'; (imgs/'sub').mkdir(parents=True)
    content = {f'{i}.bin': os.urandom(100 + i) for i in range(30)} | {'sub/x.txt': b'nested'}
    for k, v in content.items(): (imgs/k).write_bytes(v)
    r = add('data/images', tag='f1')
    assert r.pushed and r.nfiles == 31
    remote = prj.root/'.mlnb/dvc-remote/files/md5'
    objs = {p.parent.name + p.name for p in remote.rglob('*') if p.is_file()}
    assert {hashlib.md5(v).hexdigest() for v in content.values()} | {r.md5} <= objs
    # DVC's own CLI sees nothing missing on the remote, and a clone without the cache pulls the folder back
    ds = dvc('status', '--cloud', '--json', cwd=prj.root)
    assert ds.returncode == 0 and json.loads(ds.stdout or '{}') == {}, ds.stdout + ds.stderr
    shutil.rmtree(prj.root/'.dvc/cache'); shutil.rmtree(imgs)
    site = prj.root/'.dvc/tmp'; shutil.rmtree(site, ignore_errors=True)
    pulled = dvc('pull', 'data/images.dvc', cwd=prj.root)
    assert pulled.returncode == 0, pulled.stderr
    assert {k: (imgs/k).read_bytes() for k in content} == content
    shutil.rmtree(prj.root/'.dvc/cache')
    old = load('data/images@f1')  # mlnb's own loader fetches from the remote too
    assert (old/'sub/x.txt').read_bytes() == b'nested' and len([p for p in old.rglob('*') if p.is_file()]) == 31

def test_gitignore_rules_and_negations(prj):
    from mlnb.data import add, DataError
    (prj.root/'.gitignore').write_text((prj.root/'.gitignore').read_text() + 'scratch*.csv\n!scratch-keep.csv\nweird/*.dvc\n')
    git('add', '.gitignore', cwd=prj.root); git('commit', '-q', '-m', 'ignore rules', cwd=prj.root)
    table().to_csv(prj.root/'data/scratch-keep.csv', index=False); table().to_csv(prj.root/'data/scratch-drop.csv', index=False)
    assert add('data/scratch-keep.csv').commit  # re-included by the negated rule
    with pytest.raises(DataError, match=r"data/scratch-drop.csv is ignored by git \(.gitignore:\d+:scratch\*.csv\)"): add('data/scratch-drop.csv')
    (prj.root/'weird').mkdir(); (prj.root/'weird/a.bin').write_bytes(b'x')
    with pytest.raises(DataError, match=r"weird/a.bin.dvc would be ignored by git"): add('weird/a.bin')
    # a second add of unchanged data commits nothing and says so
    r = add('data/scratch-keep.csv')
    assert not r.changed and r.commit == git('rev-parse', 'HEAD', cwd=prj.root).strip()

def test_data_package_is_light_and_whole():
    "`mlnb.data` gives the versions' and the quality gate's names, and importing it imports nothing heavy."
    code = ("import sys, mlnb.data as d, mlnb.data.quality as q, mlnb.data.versions as v; "
            "assert d.check is q.check and d.Profile is q.Profile and d.require_clean is q.require_clean and d.add is v.add and d.load is v.load; "
            "assert not any(m in sys.modules for m in ('dvc', 'pandas', 'mlflow', 'torch')), 'heavy import'")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env={**os.environ, **ENV})
    assert r.returncode == 0, r.stderr
