"""Shared fixtures: a fresh mlnb project, the `mlnb` command in a subprocess, an IPython shell with the extension."""
import os, subprocess, sys
from pathlib import Path
import pytest

@pytest.fixture
def mlnb_cli():
    "Run `mlnb ARGS...` in a subprocess; returns the CompletedProcess (text)."
    def run(*args, cwd=None, env=None, timeout=300):
        e = {**os.environ, 'DVC_NO_ANALYTICS': '1', **(env or {})}
        e.pop('MLNB_PROJECT', None) if 'MLNB_PROJECT' not in (env or {}) else None
        return subprocess.run([sys.executable, '-m', 'mlnb.cli', *map(str, args)], cwd=cwd, env=e,
                              capture_output=True, text=True, timeout=timeout)
    return run

@pytest.fixture
def project(tmp_path, monkeypatch):
    "A fresh project made by `mlnb.project.init`, with the working directory inside it."
    from mlnb.project import init
    prj = init(tmp_path/'proj')
    monkeypatch.chdir(prj.root)
    return prj

@pytest.fixture
def ip():
    "An IPython shell with `%load_ext mlnb` done (and undone afterwards)."
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    shell.run_line_magic('load_ext', 'mlnb')
    yield shell
    shell.run_line_magic('unload_ext', 'mlnb')
