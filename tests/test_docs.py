"""The docs site, checked without Quarto (which cannot be installed here; `.github/workflows/docs.yml` builds the real
site): the notebooks go through nbdev's docs processing, every exported function and class has a docstring and
documented parameters, and the processed notebooks render to a local HTML preview whose internal links resolve and
whose pages load in headless Chromium without console errors."""
import html.parser, importlib, inspect, json, os, pkgutil, re, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
SITE = 'https://mlnb.github.io/mlnb'
CHROMIUM = os.environ.get('MLNB_CHROMIUM', '/usr/bin/chromium')
ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
        '--disable-component-update', '--no-first-run']

# nbdev's docs processing (what `nbdev-proc-nbs` does to each notebook), one notebook per process, so that every
# notebook's failure is reported by name instead of the run stopping at the first.
PROC = r"""
import sys
from pathlib import Path
from nbdev.quarto import _proc_file
import nbdev.serve_drv
o = _proc_file(Path('nbs', sys.argv[1]).resolve(), cache=Path('_proc').resolve(), path=Path('nbs').resolve())
if o: nbdev.serve_drv.main(o)
"""

def _proc_one(tmp:Path, rel:str):
    "Process one notebook in `tmp`; returns (rel, None) or (rel, the error's last line)."
    try: r = subprocess.run([sys.executable, '-c', PROC, rel], cwd=tmp, capture_output=True, text=True, timeout=400,
                            env={**os.environ, 'DVC_NO_ANALYTICS': '1', 'PYTHONWARNINGS': 'ignore'})
    except subprocess.TimeoutExpired: return rel, "timed out after 400 s"
    if r.returncode == 0: return rel, None
    lines = [l for l in r.stderr.strip().splitlines() if re.match(r'^\w+(\.\w+)*(Error|Exception|Exit|Interrupt)\b', l)]
    return rel, (lines[-1] if lines else (r.stderr.strip().splitlines() or [f'exit {r.returncode}'])[-1])[:300]


def _page(rel:str) -> str:
    "The site page of a notebook: `00_core.ipynb` → `core.html` (nbdev drops the number prefix)."
    p = Path(rel)
    return (p.parent/(re.sub(r'^\d+_', '', p.stem) + '.html')).as_posix()

@pytest.fixture(scope='module')
def processed(tmp_path_factory):
    "The notebooks after nbdev's docs processing, in a copy of the repo: (the `_proc` folder, {notebook: error or None})."
    tmp = tmp_path_factory.mktemp('docs')
    shutil.copy(ROOT/'pyproject.toml', tmp/'pyproject.toml')
    shutil.copytree(NBS, tmp/'nbs', ignore=lambda d, names: [n for n in names if n.startswith('.') or ':' in n or n == '__pycache__'])
    from concurrent.futures import ThreadPoolExecutor
    nbs = sorted(p.relative_to(tmp/'nbs').as_posix() for p in (tmp/'nbs').rglob('*.ipynb')
                 if not any(s.startswith(('_', '.')) for s in p.relative_to(tmp/'nbs').parts))
    for f in ['_quarto.yml', 'nbdev.yml', 'styles.css']:
        if (tmp/'nbs'/f).exists(): (tmp/'_proc').mkdir(exist_ok=True); shutil.copy(tmp/'nbs'/f, tmp/'_proc'/f)
    with ThreadPoolExecutor(max(2, min(4, os.cpu_count() or 2))) as ex:
        res = dict(ex.map(lambda rel: _proc_one(tmp, rel), nbs))
    return tmp/'_proc', res

@pytest.mark.timeout(900)  # the fixture executes every notebook's exported cells, as nbdev's docs build does
def test_notebooks_process_for_docs(processed):
    proc, res = processed
    assert len(res) >= 20, sorted(res)
    new = {nb: err for nb, err in res.items() if err}
    assert not new, "nbdev's docs processing fails on:\n" + '\n'.join(f"  {nb}: {err}" for nb, err in sorted(new.items()))
    for nb, err in res.items():
        if not err: assert (proc/nb).exists(), f"{nb} processed but not written"

# ---- docstrings and docments --------------------------------------------------------------------------------------

def _exported():
    "(module, name, object) for every function and class in a module's `__all__`, defined in that module."
    import mlnb
    for m in sorted(pkgutil.iter_modules(mlnb.__path__), key=lambda m: m.name):
        if m.name.startswith('_'): continue
        mod = importlib.import_module(f'mlnb.{m.name}')
        for name in getattr(mod, '__all__', []):
            obj = getattr(mod, name, None)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and getattr(obj, '__module__', None) == mod.__name__:
                yield m.name, name, obj

def undocumented_params(obj) -> list[str]:
    "Parameters of a function (or a class's own `__init__`, or a dataclass's fields) with neither a docment nor a mention in the docstring."
    import dataclasses
    from fastcore.docments import docments
    if inspect.isclass(obj):
        if '__init__' not in vars(obj): return []  # inherited: documented where it is defined
        f = obj if dataclasses.is_dataclass(obj) else obj.__init__
    else: f = obj
    try: sig = inspect.signature(obj)
    except (TypeError, ValueError): return []
    try: docs = docments(f, full=True)
    except Exception: docs = {}
    text = (inspect.getdoc(obj) or '') + '\n' + ((inspect.getdoc(obj.__init__) or '') if inspect.isclass(obj) else '')
    bad = []
    for n, p in sig.parameters.items():
        if n in ('self', 'cls') or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD): continue
        d = docs.get(n)
        if isinstance(d, dict) and d.get('docment'): continue
        if re.search(rf"(^|\W)`?{re.escape(n)}`?\s*(\([^)]*\))?\s*(:|—|-)", text, re.M): continue  # a docstring section
        bad.append(n)
    return bad

def test_exports_have_docstrings():
    missing = [f"mlnb.{m}.{n}" for m, n, o in _exported() if not (o.__doc__ or '').strip()]
    assert not missing, "exported without a docstring:\n  " + '\n  '.join(missing)

def test_parameters_documented():
    found = [f"mlnb.{m}.{n}: `{p}`" for m, n, o in _exported() for p in undocumented_params(o)]
    assert len({n for m, n, o in _exported()}) > 100  # the check sees the whole API
    assert not found, ("parameters without a docment (an inline `# comment`, see STYLE.md) or a docstring section:\n  "
                       + '\n  '.join(found))

def test_docments_checker():
    def good(a:int, # The a
             b=2, # The b
            ): "Fine."
    def bad(a, b=2): "Missing both."
    def section(a, b=2):
        "Documented in sections.\n\na: the a\nb (int): the b"
    assert undocumented_params(good) == [] and undocumented_params(section) == []
    assert undocumented_params(bad) == ['a', 'b']
# ---- the local HTML preview ---------------------------------------------------------------------------------------

class _Links(html.parser.HTMLParser):
    "Collects `href`/`src` values and element ids of a page."
    def __init__(self):
        super().__init__(); self.links, self.ids, self.iframes = [], set(), 0
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == 'iframe': self.iframes += 1
        if a.get('id'): self.ids.add(a['id'].lower())
        if tag == 'a' and a.get('href'): self.links.append(a['href'])

def render_preview(proc:Path, out:Path) -> list[str]:
    "Render the processed notebooks to `out/PAGE.html` with nbconvert (no remote scripts: the preview works offline)."
    import nbformat
    from nbconvert import HTMLExporter
    from traitlets.config import Config
    c = Config()
    c.TagRemovePreprocessor.enabled = True
    c.TagRemovePreprocessor.remove_input_tags = {'echo-false'}
    ex = HTMLExporter(template_name='lab', config=c)
    ex.exclude_input_prompt = ex.exclude_output_prompt = True
    keys = {'cell_type', 'id', 'metadata', 'source', 'outputs', 'execution_count', 'attachments'}
    pages = []
    for nb in sorted(proc.rglob('*.ipynb')):
        rel = nb.relative_to(proc).as_posix()
        d = json.loads(nb.read_text())
        d['metadata'].pop('widgets', None)  # widget state would pull the widget renderer from unpkg
        page = _page(rel)
        c0 = d['cells'][0] if d['cells'] else {}
        if c0.get('cell_type') == 'raw' and ''.join(c0['source']).startswith('---'):  # nbdev's front matter → a title
            import yaml
            fm = yaml.safe_load(''.join(c0['source']).strip().strip('-')) or {}
            if fm.get('output-file'): page = (Path(rel).parent/fm['output-file']).as_posix()
            d['cells'][0] = {'cell_type': 'markdown', 'metadata': {}, 'id': c0.get('id', 'title'),
                             'source': f"# {fm.get('title', Path(rel).stem)}\n\n> {fm.get('description', '')}".rstrip('> \n')}
        for cell in d['cells']:
            for k in set(cell) - keys: del cell[k]  # nbdev's processing leaves its own keys (`has_sd`)
            cell['metadata'].pop('execution', None)  # and timings that nbformat's schema rejects
            if cell['cell_type'] == 'code' and re.search(r'^#\|\s*echo:\s*false', ''.join(cell['source']), re.M):
                cell['metadata'].setdefault('tags', []).append('echo-false')  # show_doc cells: the output only
        body, _ = ex.from_notebook_node(nbformat.reads(json.dumps(d), as_version=4))
        body = re.sub(r'<script[^>]*src="https?://[^"]*"[^>]*>\s*</script>', '', body)  # require.js, MathJax from CDNs
        dest = out/page
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(body)
        pages.append(page)
    return pages

def _target(page:str, href:str) -> tuple[str, str]|None:
    "The (page, anchor) an internal link points to, or None for an external one."
    if href.startswith(SITE + '/'): href, page = '/' + href[len(SITE) + 1:], 'index.html'
    elif re.match(r'^[a-z][a-z0-9+.-]*:', href, re.I) or href.startswith('//'): return None
    path, _, frag = href.partition('#')
    path = path.split('?')[0]
    if not path: return page, frag
    path = (Path(page).parent/path).as_posix() if not path.startswith('/') else path.lstrip('/')
    path = os.path.normpath(path)
    if path.endswith('.ipynb'): path = _page(path)
    elif path.endswith('.html.md'): path = path[:-3]
    return path, frag

def _anchor_ok(frag:str, ids:set) -> bool:
    "nbdev links every backticked name in `_modidx`: a method (`Class.meth`) resolves when its class is documented on the page, a private name (`_x`) when the page exists."
    return frag in ids or frag.startswith('_') or ('.' in frag and frag.split('.')[0] in ids)

@pytest.fixture(scope='module')
def preview(processed, tmp_path_factory):
    "(the preview folder, its pages, the pages of notebooks that failed processing: `test_notebooks_process_for_docs` reports those)."
    out = tmp_path_factory.mktemp('preview')
    return out, render_preview(processed[0], out), {_page(nb) for nb, err in processed[1].items() if err}

@pytest.mark.timeout(900)  # may be the test that sets up the processing fixture
def test_preview_links_resolve(preview):
    out, pages, failed = preview
    assert {'index.html', 'core.html', 'tutorials/end_to_end.html', 'tutorials/tune_explain_card.html', 'tutorials/pipeline_serve_retrain.html'} <= set(pages), pages
    parsed = {}
    for p in pages:
        parsed[p] = _Links(); parsed[p].feed((out/p).read_text())
    broken = []
    for p, links in parsed.items():
        assert links.iframes == 0, f"{p} has an iframe"
        for href in links.links:
            t = _target(p, href)
            if t is None: continue
            page, frag = t
            if page.endswith(('.md', '.yml', '.css', '.png', '.svg', '.txt')) and (out/page).exists(): continue
            if page in failed and page not in parsed: continue  # its notebook failed processing: reported there
            if page not in parsed: broken.append(f"{p}: {href} (no page {page})")
            elif frag and not _anchor_ok(frag.lower(), parsed[page].ids): broken.append(f"{p}: {href} (no #{frag} in {page})")
    assert not broken, "internal links that do not resolve:\n  " + '\n  '.join(sorted(set(broken)))

@pytest.mark.timeout(900)  # may be the test that sets up the processing fixture
def test_preview_loads_in_chromium(preview):
    if not Path(CHROMIUM).exists(): pytest.skip(f"chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    sync_playwright = pytest.importorskip('playwright.sync_api').sync_playwright
    out, pages, _ = preview
    errors = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page()
        page.on('console', lambda m: errors.append(f"{page.url}: console.{m.type}: {m.text}") if m.type == 'error' else None)
        page.on('pageerror', lambda e: errors.append(f"{page.url}: {e}"))
        try:
            for p in pages:
                page.goto((out/p).as_uri(), wait_until='load')
                assert page.locator('h1').count() >= 1, f"{p} has no title"
            page.goto((out/'index.html').as_uri(), wait_until='load')
            href = page.locator('a[href*="core.html"]').first.get_attribute('href')
            assert href, "the index page links to no module page"
        finally: browser.close()
    assert not errors, "console errors in the preview:\n  " + '\n  '.join(errors)

# ---- the site's build and the no-iframe rule ----------------------------------------------------------------------

def test_pages_workflow_pins_quarto_and_runs_nbdev_docs():
    import yaml
    wf = yaml.safe_load((ROOT/'.github'/'workflows'/'docs.yml').read_text())
    assert re.fullmatch(r'\d+\.\d+\.\d+', wf['env']['QUARTO_VERSION']), "Quarto must be a pinned release"
    steps = wf['jobs']['build']['steps']
    runs = '\n'.join(s.get('run', '') for s in steps)
    assert 'quarto-cli/releases/download/v${QUARTO_VERSION}' in runs and 'nbdev-docs' in runs
    assert any(s.get('uses', '').startswith('actions/upload-pages-artifact') and s['with']['path'] == '_docs' for s in steps)
    assert wf['jobs']['deploy']['needs'] == 'build' and wf['permissions']['pages'] == 'write'

def test_no_iframes():
    "Widgets are ipywidgets views: no notebook output or module renders an iframe (they break in VS Code and Colab)."
    hits = [p.relative_to(ROOT).as_posix() for p in [*NBS.rglob('*.ipynb'), *(ROOT/'mlnb').glob('*.py')]
            if re.search(r'<iframe|IFrame\(', p.read_text(errors='ignore'), re.I)]
    assert not hits, f"iframes in: {hits}"
