"""The tutorials in `nbs/tutorials/` keep the outputs of a real run, so that the docs site shows the views (the static
HTML fallbacks of mlnb's widgets, the tables, the text) without executing anything. `nbdev-test` executes the
tutorials; these tests check what was saved: every view the site needs is there, nothing in it churns from one
run to the next (temp paths, clock times, run ids, widget state), and `nbdev-clean` leaves it as it is.

To refresh the saved outputs after editing a tutorial (a few minutes; it needs the `dev` extra):

    python tests/test_tutorials.py                       # every tutorial
    python tests/test_tutorials.py end_to_end.ipynb      # one

Each tutorial is executed in a fresh kernel by nbclient; a live widget's output is replaced by its final HTML (what
the widget showed when the cell ended), volatile values are replaced by stable placeholders, and the notebook is
cleaned by nbdev's own `clean_nb`."""
import copy, html, json, os, re, sys, tempfile
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT/'nbs'/'tutorials'
WIDGET_VIEW = 'application/vnd.jupyter.widget-view+json'
WIDGET_STATE = 'application/vnd.jupyter.widget-state+json'

# ---- saving a tutorial's outputs ----------------------------------------------------------------------------------

def widget_html(state:dict, # `model_id -> {'model_name', 'state', ...}` from the notebook's widget state
                model_id:str, # The widget to render
               ) -> str:
    "The static HTML of an ipywidgets view: an `HTML` widget's value, a box's children in order; controls (dropdowns, buttons, pickers) have no static form."
    m = state.get(model_id)
    if m is None: return ''
    name, s = m.get('model_name', ''), m.get('state', {})
    if name in ('HTMLModel', 'HTMLMathModel'): return s.get('value', '')
    if name in ('LabelModel',): return f"<div>{html.escape(s.get('value', ''))}</div>"
    if 'children' in s:
        kids = [widget_html(state, c.removeprefix('IPY_MODEL_')) for c in s['children']]
        return ''.join(k for k in kids if k)
    return ''

def _is_progress(state:dict, model_id:str) -> bool:
    "Whether a widget is, or holds, a progress bar."
    m = state.get(model_id, {})
    if m.get('model_name') in ('FloatProgressModel', 'IntProgressModel'): return True
    return any(_is_progress(state, c.removeprefix('IPY_MODEL_')) for c in m.get('state', {}).get('children', []))

def fallback_outputs(nb:dict, # A notebook executed with `store_widget_state=True` (a dict)
                    ) -> dict:
    "Replace each live widget output with its final HTML, and drop the widget state (the site has no widget manager)."
    state = nb.get('metadata', {}).pop('widgets', {}).get(WIDGET_STATE, {}).get('state', {})
    for cell in nb['cells']:
        outs = []
        for o in cell.get('outputs', []):
            if o.get('output_type') == 'stream' and o.get('name') == 'stderr': continue  # warnings and progress noise
            if o.get('output_type') == 'stream' and not ''.join(o.get('text', '')).strip(): continue
            data = o.get('data', {})
            view = data.get(WIDGET_VIEW)
            if view is not None:
                if _is_progress(state, view['model_id']): continue  # a progress bar (tqdm): transient
                body = widget_html(state, view['model_id'])
                if not body: continue
                o = {'output_type': 'display_data', 'metadata': {}, 'data': {'text/html': body}}
            elif 'text/html' in data:
                if not _text(''.join(data['text/html'])): continue  # an empty rich console
                for k in ('text/plain', 'text/markdown'): data.pop(k, None)  # the page shows the HTML; the others would only repeat it
            outs.append(o)
        if 'outputs' in cell: cell['outputs'] = outs
    return nb

# Table columns (or the first cell of a row, in two-column "what/value" tables) whose values differ on every run:
# their cells show a placeholder in the saved copy. So do measured speeds and system metrics inside a cell.
VOLATILE_COLUMNS = {'run', 'run_id', 'started', 'duration', 'seconds', 'created', 'date', 'loaded_at', 'time', 'when', 'commit',
                    'samples_per_s', 'samples/s', 'metrics.samples_per_s', 'mfu', 'metrics.epoch_seconds', 'finished',
                    'user', 'mlflow.user', 'mlnb.pid', 'mlnb.host', 'mlflow.source.name', 'last_tick'}
MEASURED = re.compile(r'\b((?:metrics\.)?samples_per_s|system/\w+|seconds)=[-+\d.e]+')
DURATION = re.compile(r'\b\d+\.\d+ ?s\b')  # "in 12.3s", "(4.1s)": wall times
TIMESTAMP = re.compile(r'\b\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d(\.\d+)?)?([+-]\d\d:?\d\d|Z)?')
HEX32 = re.compile(r'\b[0-9a-f]{32}\b')
TMP = re.compile(r'(?:/private)?/(?:tmp|var/folders)/[^\s\'"<>`),;]*')

def _text(cell:str) -> str: return html.unescape(re.sub(r'<[^>]+>', '', cell)).strip()

def _scrub_table(t:str) -> str:
    "Blank the cells of volatile columns, and of volatile rows of a what/value table, in one `<table>`."
    heads = [_text(h) for h in re.findall(r'<th[^>]*>(.*?)</th>', t, re.S)]
    bad = {i for i, h in enumerate(heads) if h in VOLATILE_COLUMNS}
    def row(m):
        cells = re.findall(r'<td[^>]*>.*?</td>', m.group(1), re.S)
        if len(cells) != len(heads): return m.group(0)
        if cells and _text(cells[0]) in VOLATILE_COLUMNS: return '<tr>' + cells[0] + '<td>…</td>' * (len(cells) - 1) + '</tr>'
        return '<tr>' + ''.join('<td>…</td>' if i in bad else c for i, c in enumerate(cells)) + '</tr>'
    return re.sub(r'<tr>((?:(?!</tr>).)*?<td.*?)</tr>', row, t, flags=re.S)

def scrub(text:str, # An output's text or HTML
          tmp:str|None=None, # The temp folder the kernel ran in (replaced by `/tmp/…`)
         ) -> str:
    "Replace what changes on every run with stable placeholders: temp paths, clock times, run and request ids, measured speeds, volatile table columns."
    if tmp: text = re.sub(re.escape(tmp) + r'[^\s\'"<>`),;]*', '/tmp/…', text)
    text = TMP.sub('/tmp/…', text)
    text = TIMESTAMP.sub('YYYY-MM-DD hh:mm', text)
    text = HEX32.sub('<id>' if '<' not in text else '&lt;id&gt;', text)
    text = MEASURED.sub(lambda m: f"{m.group(1)}=…", text)
    text = DURATION.sub('…s', text)
    text = re.sub(r"<table[ >].*?</table>", lambda m: _scrub_table(m.group(0)), text, flags=re.S)
    return text

def _scrub_nb(nb:dict, tmp:str|None):
    for cell in nb['cells']:
        for o in cell.get('outputs', []):
            if 'text' in o: o['text'] = scrub(''.join(o['text']), tmp)
            for k, v in o.get('data', {}).items():
                if k.startswith('text/') or k == 'image/svg+xml': o['data'][k] = scrub(''.join(v) if isinstance(v, list) else v, tmp)
            if o.get('output_type') == 'error': o['traceback'] = [scrub(l, tmp) for l in o.get('traceback', [])]
    return nb

def clean(nb:dict) -> dict:
    "nbdev's own cleaning (what `nbdev-clean` does to the file), on a copy."
    from nbdev.clean import clean_nb
    nb = copy.deepcopy(nb)
    clean_nb(nb)
    return nb

def save(path:Path, # The tutorial notebook
         timeout:int=1200, # Seconds a cell may run
        ) -> Path:
    "Execute `path` in a fresh kernel and write it back with its outputs as the site should show them."
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(str(path), as_version=4)
    with tempfile.TemporaryDirectory(prefix='mlnb-tutorial-') as tmp:
        env = {**os.environ, 'TMPDIR': tmp, 'DVC_NO_ANALYTICS': '1', 'PYTHONWARNINGS': 'ignore', 'MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR': 'false',
               'PYTHONPATH': os.pathsep.join([str(ROOT), *filter(None, [os.environ.get('PYTHONPATH')])])}  # this checkout's mlnb
        env.pop('MLNB_PROJECT', None)
        client = NotebookClient(nb, timeout=timeout, kernel_name='python3', store_widget_state=True,
                                resources={'metadata': {'path': str(path.parent)}})
        old = dict(os.environ)
        os.environ.update(env)  # the kernel inherits the environment of this process
        try: client.execute(env=env)
        finally: os.environ.clear(); os.environ.update(old)
        d = json.loads(nbformat.writes(nb))
        d = clean(_scrub_nb(fallback_outputs(d), tmp))
    nbformat.validate(nbformat.from_dict(d))
    path.write_text(json.dumps(d, indent=1, ensure_ascii=False) + '\n')
    nbdev_clean_file(path)  # and in the file format nbdev-clean writes
    rec = json.loads(SAVED.read_text()) if SAVED.exists() else {}
    rec[path.name] = code_hash(json.loads(path.read_text()))
    SAVED.write_text(json.dumps(dict(sorted(rec.items())), indent=1) + '\n')
    return path

SAVED = TUTORIALS/'.saved_outputs.json'  # tutorial -> `code_hash` of the code its saved outputs came from

def code_hash(nb:dict, # A notebook (a dict)
             ) -> str:
    "A hash of the notebook's code cells: the saved outputs are current while it matches the one recorded when they were saved."
    import hashlib
    code = '\n\x00'.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'code')
    return hashlib.sha256(code.encode()).hexdigest()[:16]

def nbdev_clean_file(path:Path, # The notebook to clean in place
                    ):
    "Run `nbdev-clean` on one notebook with this repo's settings."
    import subprocess
    subprocess.run(['nbdev-clean', '--fname', str(path)], cwd=ROOT, check=True, capture_output=True, timeout=120)

# ---- what the saved outputs must show -----------------------------------------------------------------------------

def _load(name:str) -> dict: return json.loads((TUTORIALS/name).read_text())

def _outputs(nb:dict) -> list[str]:
    "Every output's text and HTML, one string per output."
    res = []
    for c in nb['cells']:
        for o in c.get('outputs', []):
            res.append(''.join(o.get('text', '')) + '\n'.join(''.join(v) if isinstance(v, list) else str(v) for k, v in o.get('data', {}).items()
                                                            if k.startswith('text/') or k == 'image/svg+xml'))
    return res

def _output_of(nb:dict, code:str) -> str:
    "The outputs of the first code cell whose source contains `code`."
    for c in nb['cells']:
        if c['cell_type'] == 'code' and code in ''.join(c['source']):
            return '\n'.join(_outputs({'cells': [c]}))
    raise AssertionError(f"no cell with {code!r}")

def _html_of(nb:dict, code:str) -> str:
    "The HTML outputs of the first code cell whose source contains `code`."
    for c in nb['cells']:
        if c['cell_type'] == 'code' and code in ''.join(c['source']):
            return '\n'.join(''.join(o['data']['text/html']) for o in c.get('outputs', []) if 'text/html' in o.get('data', {}))
    raise AssertionError(f"no cell with {code!r}")

def tutorials() -> list[str]: return sorted(p.name for p in TUTORIALS.glob('*.ipynb'))

def test_the_story_is_told():
    "Together the tutorials cover the whole story, each step through the public API."
    src = '\n'.join(''.join(c['source']) for n in tutorials() for c in _load(n)['cells'] if c['cell_type'] == 'code')
    steps = {'init': r'mlnb\.(init|use_template)\(', 'data': r'mlnb\.data\.add\(', 'track': r'mlnb\.run\(|%%mlnb track',
             'train': r'mlnb\.train\(', 'tune': r'mlnb\.tune\(', 'drift': r'mlnb\.drift\(', 'explain': r'mlnb\.explain\(',
             'register': r'mlnb\.register\(', 'promote': r'mlnb\.promote\(', 'card': r'mlnb\.card\(', 'serve': r'mlnb\.serve\(',
             'pipeline': r'mlnb\.reproduce\(', 'retrain': r'retrain\('}
    missing = [k for k, pat in steps.items() if not re.search(pat, src)]
    assert not missing, f"no tutorial shows: {missing}"

@pytest.mark.parametrize('name', tutorials())
def test_outputs_saved(name):
    "Every shown cell (not `#| hide`) that ends in an expression or prints has a saved output, and no cell saved an error."
    nb = _load(name)
    errors = [o.get('ename') for c in nb['cells'] for o in c.get('outputs', []) if o.get('output_type') == 'error']
    assert not errors, f"{name}: cells saved errors {errors}"
    missing = []
    for c in nb['cells']:
        if c['cell_type'] != 'code': continue
        s = ''.join(c['source'])
        if re.search(r'^#\|\s*hide', s, re.M) or not s.strip(): continue
        last = s.rstrip().splitlines()[-1]
        shows = (re.match(r'^[A-Za-z_%{(][^=]*$', last) and not re.match(r'^(import|from|with|for|if|def|class|assert|test_\w+\(|os\.chdir|%load_ext)\b', last)) \
                or re.search(r'^print\(', s, re.M)
        if shows and not c.get('outputs'): missing.append(s.splitlines()[0][:60])
    assert not missing, f"{name}: cells with no saved output (run `python tests/test_tutorials.py {name}`): {missing}"

@pytest.mark.parametrize('name', tutorials())
def test_outputs_current(name):
    "The saved outputs came from the code the tutorial has now (a code change needs a re-save)."
    rec = json.loads(SAVED.read_text()) if SAVED.exists() else {}
    assert rec.get(name) == code_hash(_load(name)), \
        f"{name}: its code changed since its outputs were saved: run `python tests/test_tutorials.py {name}` and commit the result"

@pytest.mark.parametrize('name', tutorials())
def test_outputs_do_not_churn(name):
    "What a re-run would change is not saved: widget state, execution counts, temp paths, clock times, run ids."
    nb = _load(name)
    assert 'widgets' not in nb['metadata'], f"{name}: widget state saved (the site renders no live widget)"
    assert clean(nb) == nb, f"{name}: `nbdev-clean` would change it"
    import shutil
    copy_ = Path(tempfile.mkdtemp())/name
    shutil.copy(TUTORIALS/name, copy_)
    nbdev_clean_file(copy_)
    assert copy_.read_text() == (TUTORIALS/name).read_text(), f"{name}: `nbdev-clean` would rewrite the file"
    for c in nb['cells']:
        assert c.get('execution_count') is None, f"{name}: execution counts saved"
        for o in c.get('outputs', []):
            assert WIDGET_VIEW not in o.get('data', {}), f"{name}: a live widget output saved instead of its HTML fallback"
            assert not (o.get('output_type') == 'stream' and o.get('name') == 'stderr'), f"{name}: stderr saved: {''.join(o['text'])[:200]}"
    for out in _outputs(nb):
        for pat in (TMP, TIMESTAMP, HEX32, DURATION, re.compile(r'samples_per_s=\d|system/\w+=\d')):
            m = pat.search(out.replace('/tmp/…', ''))
            assert not m, f"{name}: a volatile value saved: {m.group(0)!r} in {out[max(0, m.start() - 80):m.end() + 40]!r}"
        assert not re.search(r'<iframe|<script', out, re.I), f"{name}: an output with an iframe or a script"

def test_tutorial_1_shows_runs_drift_and_promotion():
    nb = _load('end_to_end.ipynb')
    runs = _html_of(nb, '= %mlnb runs')
    assert "class='mlnb-table'" in runs and 'metrics.val_accuracy' in runs, runs[:500]
    for name in ('baseline', 'logreg-C0.5', 'logreg-C0.01'): assert name in runs, name
    drift = _html_of(nb, 'shifted = mlnb.drift')
    assert 'mlnb-table' in drift and 'pixel_' in drift and re.search(r'drift', drift, re.I), drift[:500]
    promo = _output_of(nb, "decision = mlnb.promote")
    assert 'PROMOTED' in promo and 'digits' in promo, promo[:500]
    models = _html_of(nb, 'models = mlnb.list_models')
    assert 'champion' in models, models[:500]
    train = _html_of(nb, 'res = mlnb.train(')
    assert 'val_accuracy' in train, train[:500]

def test_tutorial_1_shows_fairness_on_the_cards_of_a_classifier_and_a_regressor():
    "Issue 22, point 5: the cards of the tutorial's multiclass and regression models have their Fairness sections, per group, with intervals."
    nb = _load('end_to_end.ipynb')
    fair = _html_of(nb, "fair = mlnb.fairness('digits@champion'")
    assert 'mlnb-table' in fair and 'recall_0' in fair and 'heavy' in fair, fair[:500]
    mc = _output_of(nb, "digits_card = mlnb.card(")
    assert 'By `ink` (multiclass: classes 0, 1, 2, 3, 4, 5, 6, 7, 8, 9)' in mc, mc[:800]
    assert '| group | n | accuracy | recall 0 | precision 0 | recall 1 |' in mc, mc[:800]
    for g in ('heavy', 'light'): assert re.search(rf"\| {g} \| \d+ \| [\d.]+ \[[\d.]+, [\d.]+\] \| [\d.]+ \[", mc), (g, mc[:1200])  # per-group per-class recall, with its interval
    rg = _output_of(nb, "err = mlnb.fairness(")
    assert 'By `sex_group` (regression)' in rg and '| group | n | MAE | RMSE | bias (mean error) | note |' in rg, rg[:800]
    for g in ('sex 1', 'sex 2'): assert re.search(rf"\| {g} \| \d+ \| [\d.]+ \[[\d.]+, [\d.]+\] \|", rg), (g, rg[:800])  # per-group error

def test_tutorial_2_shows_trials_explanation_and_card():
    nb = _load('tune_explain_card.ipynb')
    tune = _html_of(nb, 'mlnb.tune(')
    assert 'mlnb-tune' in tune and '<svg' in tune and 'trials of' in tune, tune[:500]
    ex = _html_of(nb, 'mlnb.explain(')
    assert 'mlnb-table' in ex and 'worst_' in ex, ex[:500]
    card = _html_of(nb, 'mlnb.card(')
    assert re.search(r'<h1[^>]*>', card) and 'Intended use' in card and 'cancer' in card, card[:500]

def test_tutorial_3_shows_pipeline_prediction_and_retrain():
    nb = _load('pipeline_serve_retrain.ipynb')
    dag = _html_of(nb, 'PipelineShow(graph)')
    assert '<svg' in dag and 'evaluate' in dag, dag[:500]
    pipe = _output_of(nb, 'mlnb.reproduce(')
    for step in ('prepare', 'train', 'evaluate', 'register'): assert step in pipe, (step, pipe[:500])
    pred = _output_of(nb, '/predict')
    assert re.search(r'model classifier version 1: \[[01], [01], [01]\]', pred), pred[:500]
    rt = _output_of(nb, 'report = retrain(')
    assert 'promoted' in rt and 'challenger vs champion' in rt, rt[:500]

def test_tutorials_in_sidebar():
    "The site's sidebar (curated in `_quarto.yml`) lists every tutorial and every other notebook, and nothing that does not exist."
    import yaml
    q = yaml.safe_load((ROOT/'nbs'/'_quarto.yml').read_text())
    assert 'sidebar.yml' not in q.get('metadata-files', []), "nbdev-docs writes sidebar.yml as a folder listing: it must not override the curated sidebar"
    sys.path.insert(0, str(ROOT/'scripts'))
    import docs_build  # the sidebar as the site's build reads it
    listed = [nb for _, nbs in docs_build.sidebar(ROOT/'nbs') for nb in nbs]
    assert len(listed) == len(set(listed)), "the sidebar lists a page twice"
    missing = [n for n in tutorials() if f'tutorials/{n}' not in listed]
    assert not missing, f"tutorials missing from the sidebar in nbs/_quarto.yml: {missing}"
    nbs = {p.relative_to(ROOT/'nbs').as_posix() for p in (ROOT/'nbs').rglob('*.ipynb') if '.ipynb_checkpoints' not in p.parts}
    assert not set(listed) - nbs, f"the sidebar lists what is not a notebook: {sorted(set(listed) - nbs)}"
    assert not nbs - set(listed), f"notebooks missing from the sidebar in nbs/_quarto.yml: {sorted(nbs - set(listed))}"
    for nav in q['website']['navbar'].get('left', []): assert nav['href'] in nbs, nav

def test_scrub():
    t = ("<table class='mlnb-table'><thead><tr><th>run</th><th>name</th><th>started</th></tr></thead>"
         "<tbody><tr><td>ab12cd34</td><td>baseline</td><td>2026-11-26 13:44:43</td></tr></tbody></table>")
    s = scrub(t + " at /tmp/tmpab12/digits, run 0123456789abcdef0123456789abcdef")
    assert '<td>…</td><td>baseline</td><td>…</td>' in s and '/tmp/…' in s and '&lt;id&gt;' in s, s
    assert scrub("started 2026-11-26T13:44:43Z") == "started YYYY-MM-DD hh:mm"
    assert scrub("ran 4 stage(s) in 12.3s, samples_per_s=450.2") == "ran 4 stage(s) in …s, samples_per_s=…"
    state = {'a': {'model_name': 'VBoxModel', 'state': {'children': ['IPY_MODEL_b', 'IPY_MODEL_c']}},
             'b': {'model_name': 'DropdownModel', 'state': {'value': 'x'}}, 'c': {'model_name': 'HTMLModel', 'state': {'value': '<b>t</b>'}}}
    assert widget_html(state, 'a') == '<b>t</b>'

if __name__ == '__main__':
    names = sys.argv[1:] or tutorials()
    for n in names:
        p = TUTORIALS/Path(n).name
        print(f"executing {p.relative_to(ROOT)} ...", flush=True)
        save(p)
        print(f"saved {p.relative_to(ROOT)}", flush=True)
