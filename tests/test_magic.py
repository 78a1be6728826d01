"""The `%mlnb` magic in a real IPython shell and in a real Jupyter kernel."""
import json, subprocess, sys, textwrap
from pathlib import Path
import pytest
from IPython.core.error import UsageError

HEAVY = ['torch', 'mlflow', 'evidently', 'shap', 'transformers', 'papermill', 'dvc', 'optuna', 'sklearn', 'pandas', 'ipywidgets']

def test_load_ext_imports_nothing_heavy():
    code = textwrap.dedent(f"""
        import sys
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        ip.run_line_magic('load_ext', 'mlnb')
        assert 'mlnb' in ip.magics_manager.magics['line'] and 'mlnb' in ip.magics_manager.magics['cell']
        print([m for m in {HEAVY!r} if m in sys.modules])
    """)
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == '[]'

def test_help_lists_verbs_and_verb_help(ip, capsys):
    ip.run_line_magic('mlnb', 'help')
    out = capsys.readouterr().out
    for v in ('init', 'config', 'quickstart', 'help'): assert f"  {v}" in out
    ip.run_line_magic('mlnb', 'init --help')
    assert 'usage: %mlnb init' in capsys.readouterr().out

def test_usage_errors_are_one_line(ip):
    with pytest.raises(UsageError, match=r"unknown verb 'trian'; choose from: help, .*config.*init"): ip.run_line_magic('mlnb', 'trian')
    with pytest.raises(UsageError, match=r"unrecognized arguments: --nope"): ip.run_line_magic('mlnb', 'config --nope')
    with pytest.raises(UsageError, match=r"check the quotes"): ip.run_line_magic('mlnb', 'init "unclosed')
    with pytest.raises(UsageError, match=r"takes no cell body"): ip.run_cell_magic('mlnb', 'init', 'print(1)\n')

def test_returns_result_and_expands_variables(ip, tmp_path, capsys):
    ip.user_ns['where'] = str(tmp_path)
    ip.run_cell('prj = %mlnb init {where}/demo')
    prj = ip.user_ns['prj']
    assert prj.root == (tmp_path/'demo').resolve() and (prj.root/'mlnb.toml').exists()
    assert '[mlnb] init.step: git: initialised a repository' in capsys.readouterr().out
    ip.run_cell(f'import os; os.chdir({str(prj.root/".mlnb")!r})')  # anywhere below the root finds the project
    ip.run_cell('st = %mlnb config')
    assert ip.user_ns['st'].file == prj.root/'mlnb.toml'

def test_mlnb_errors_render_as_one_line(ip, tmp_path, capsys):
    f = tmp_path/'afile'; f.write_text('x')
    ip.user_ns['f'] = str(f)
    res = ip.run_cell('%mlnb init {f}')
    assert not res.success
    out = capsys.readouterr()
    text = out.out + out.err
    assert 'ProjectError: ' in text and 'is a file, not a folder' in text and 'Traceback' not in text

def test_config_and_quiet(ip, tmp_path, capsys):
    ip.run_line_magic('config', 'MlnbMagics.quiet = True')
    ip.user_ns['where'] = str(tmp_path)
    ip.run_line_magic('mlnb', 'init {where}/q'.format(where=tmp_path))
    assert '[mlnb]' not in capsys.readouterr().out
    ip.run_line_magic('config', 'MlnbMagics.quiet = False')

def test_unload_removes_everything():
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    shell.run_line_magic('load_ext', 'mlnb')
    shell.run_line_magic('unload_ext', 'mlnb')
    assert 'mlnb' not in shell.magics_manager.magics['line'] and 'mlnb' not in shell.magics_manager.magics['cell']
    assert not any(type(c).__name__ == 'MlnbMagics' for c in shell.configurables)
    with pytest.raises(UsageError, match='Line magic function `%mlnb` not found'): shell.run_line_magic('mlnb', 'help')

def test_in_a_real_kernel(tmp_path):
    "A notebook executed by a real ipykernel: the magic works, and an mlnb error is one line, not a traceback."
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('%mlnb help'),  # before %load_ext: IPython's own one-line error
                nbformat.v4.new_code_cell('%load_ext mlnb'),
                nbformat.v4.new_code_cell(f'prj = %mlnb init {tmp_path}/k\nprint(prj.root)'),
                nbformat.v4.new_code_cell(f'%mlnb init {tmp_path}/k/mlnb.toml'),
                nbformat.v4.new_code_cell(DRIFT_DATA),
                nbformat.v4.new_code_cell('%mlnb drift ref cur'),  # a bare verb with a view: its result is shown once
                nbformat.v4.new_code_cell('r = %mlnb drift ref cur\nr.drifted')]
    client = NotebookClient(nb, timeout=300, kernel_name='python3', allow_errors=True, resources={'metadata': {'path': str(tmp_path)}})
    client.execute()
    before = ''.join(o.get('text', '') for o in nb.cells[0].outputs)
    assert before.strip() == 'UsageError: Line magic function `%mlnb` not found.'
    assert str(tmp_path/'k') in ''.join(o.get('text', '') for o in nb.cells[2].outputs)
    err = [o for o in nb.cells[3].outputs if o.output_type == 'error'][0]
    assert err.ename == 'ProjectError' and len(err.traceback) == 1 and 'is a file, not a folder' in err.traceback[0]
    outs = [o for o in nb.cells[5].outputs if o.output_type != 'stream']  # (the drift alert is logged to stderr)
    assert [o.output_type for o in outs] == ['display_data'], outs  # the view, and no Out[] repeating the result
    data = outs[0]['data']
    assert 'application/vnd.jupyter.widget-view+json' in data  # the live widget
    assert "<table class='mlnb-table'>" in data['text/html'] and 'drifted' in data['text/html']  # its static fallback: the result
    assert data['text/plain'].startswith('drift:'), data['text/plain']
    outs = [o for o in nb.cells[6].outputs if o.output_type != 'stream']
    assert [o.output_type for o in outs] == ['display_data', 'execute_result']
    assert outs[1]['data']['text/plain'] == "['b']"  # `r = %mlnb drift …` bound the result

def test_every_feature_module_imports_nothing_heavy():
    "`mlnb help` imports every feature module to list its verbs: none may import a heavy library at the top."
    code = f"import sys; from mlnb.core import load_verbs; load_verbs(); print([m for m in {HEAVY!r} if m in sys.modules])"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == '[]'

def test_arguments_resolve_from_the_namespace(ip):
    "A verb's `ctx.resolve` finds notebook variables by name (dotted too), and says which names are close when not."
    from mlnb.core import VERBS, verb
    def probe(obj:str, # The name of a notebook variable
             ): return obj
    verb("probe-test", "return the object named", fn=probe, call=lambda fn, kw, ctx: ctx.resolve(fn(**kw), required=True, what="model"))
    try:
        ip.user_ns['clf'] = clf = object()
        ip.user_ns['cfg'] = {'a': 1}
        ip.run_cell('got = %mlnb probe-test clf')
        assert ip.user_ns['got'] is clf
        ip.run_cell('keys = %mlnb probe-test cfg.keys')
        assert list(ip.user_ns['keys']()) == ['a']
        with pytest.raises(UsageError, match=r"no model named `clff` in the notebook \(hint: did you mean clf"):
            ip.run_line_magic('mlnb', 'probe-test clff')
    finally: VERBS.pop("probe-test", None)

DRIFT_DATA = """
import numpy as np, pandas as pd
rng = np.random.default_rng(0)
ref = pd.DataFrame({'a': rng.normal(size=300), 'b': rng.normal(size=300)})
cur = ref.assign(b=ref.b + 1)
"""

def _displays(cap, mime='application/vnd.jupyter.widget-view+json'):
    "The display publishes of `mime` captured by `capture_output`: (new displays, updates)."
    outs = [o for o in cap.outputs if mime in o.data]
    return [o for o in outs if not o.update], [o for o in outs if o.update]

def test_a_view_shows_the_result_once(ip):
    "A bare `%mlnb drift …` shows its result in the live view and not again as `Out[]`; `r = %mlnb drift …` binds it."
    pytest.importorskip('ipywidgets')
    from IPython.utils.capture import capture_output
    from mlnb.monitor.datadrift import DriftResult
    ip.run_cell(DRIFT_DATA)
    with capture_output() as cap: res = ip.run_cell('%mlnb drift ref cur')
    assert res.success and res.result is None, res.result  # nothing went to the displayhook
    assert 'Out[' not in cap.stdout
    shown, updates = _displays(cap)
    assert len(shown) == 1 and updates  # one view, updated in place to its final state
    assert "<table class='mlnb-table'>" in updates[-1].data['text/html'] and updates[-1].data['text/plain'].startswith('drift:')

    with capture_output() as cap: res = ip.run_cell('r = %mlnb drift ref cur')
    assert res.success and isinstance(ip.user_ns['r'], DriftResult) and ip.user_ns['r'].drifted == ['b']
    assert len(_displays(cap)[0]) == 1

    res = ip.run_cell('%mlnb drift ref cur\nx = 1')  # not the last statement: unchanged
    assert res.success and ip.user_ns['x'] == 1

    with capture_output(): res = ip.run_cell('%mlnb config')  # no view: the result is the cell's output
    assert res.success and type(res.result).__name__ == 'Settings'
    ip.run_line_magic('config', 'MlnbMagics.widgets = False')
    try:
        with capture_output() as cap: res = ip.run_cell('%mlnb drift ref cur')  # widgets off: no view, so Out[] shows it
        assert isinstance(res.result, DriftResult) and _displays(cap) == ([], [])
    finally: ip.run_line_magic('config', 'MlnbMagics.widgets = True')
    assert ip.run_line_magic('mlnb', 'drift ref cur').drifted == ['b']  # called from Python, the magic returns its result
