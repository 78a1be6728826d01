"""The docs site, built here as the Pages workflow builds it (`bash scripts/docs.sh`: nbdev's docs processing of the
notebooks, then Sphinx with MyST-NB; `.github/workflows/docs.yml` publishes that build): every notebook processes
and has its page, the sidebar is `nbs/_quarto.yml`'s, every internal link and anchor resolves, the search index knows
the API, the tutorials show their saved outputs, and every page loads in headless Chromium with no console error,
no failed request and no request outside the site. Also: every exported function and class has a docstring and
documented parameters.

`MLNB_DOCS_SITE=_docs` checks a site already built (the Pages workflow checks what it publishes) instead of building one."""
import html.parser, importlib, inspect, json, os, pkgutil, re, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
SITE = 'https://mlnb.github.io/mlnb'
CHROMIUM = os.environ.get('MLNB_CHROMIUM', '/usr/bin/chromium')
ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
        '--disable-component-update', '--no-first-run']

sys.path.insert(0, str(ROOT/'scripts'))
import docs_build  # the builder's own naming of pages and reading of the sidebar

def _page(rel:str) -> str:
    "The site page of a notebook: `00_core.ipynb` -> `core.html` (nbdev drops the number prefix)."
    return docs_build.page_of(rel)

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "(the built site's folder, {notebook: processing error} for the notebooks that failed, the build's output)."
    if os.environ.get('MLNB_DOCS_SITE'):
        out = Path(os.environ['MLNB_DOCS_SITE']).absolute()
        assert (out/'index.html').exists(), f"no site at {out}"
        return out, {}, ''
    tmp = tmp_path_factory.mktemp('docs')
    r = subprocess.run(['bash', str(ROOT/'scripts'/'docs.sh'), '--out', str(tmp/'site'), '--work', str(tmp/'work'),
                        '--jobs', str(max(2, min(4, os.cpu_count() or 2))), '--keep-going'],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    log = r.stdout + r.stderr
    failed = json.loads((tmp/'work'/'failures.json').read_text()) if (tmp/'work'/'failures.json').exists() else None
    assert failed is not None and (tmp/'site'/'index.html').exists(), f"the docs build failed:\n{log[-4000:]}"
    assert r.returncode == 0 or failed, f"the docs build failed:\n{log[-4000:]}"
    return tmp/'site', failed, log

def notebooks() -> list[str]: return docs_build.notebooks(NBS)

@pytest.mark.timeout(900)  # builds the site: nbdev executes every notebook's exported cells for show_doc
def test_notebooks_process_for_docs(site):
    out, failed, log = site
    assert len(notebooks()) >= 20, notebooks()
    assert not failed, "nbdev's docs processing fails on:\n" + '\n'.join(f"  {nb}: {err}" for nb, err in sorted(failed.items()))
    missing = [nb for nb in notebooks() if not (out/_page(nb)).exists()]
    assert not missing, f"notebooks without a page: {missing}"
    assert 'WARNING' not in log and 'ERROR' not in log, f"the Sphinx build warns:\n{log[-4000:]}"

# ---- docstrings and docments --------------------------------------------------------------------------------------

def _exported():
    "(module, name, object) for every function and class in a module's `__all__`, defined in that module (the modules of the packages too)."
    import mlnb
    for m in sorted(pkgutil.walk_packages(mlnb.__path__, 'mlnb.'), key=lambda m: m.name):
        if any(part.startswith('_') for part in m.name.split('.')) or '.project_templates' in m.name: continue
        mod = importlib.import_module(m.name)
        for name in getattr(mod, '__all__', []):
            obj = getattr(mod, name, None)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and getattr(obj, '__module__', None) == mod.__name__:
                yield m.name[5:], name, obj

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
# ---- the site ----------------------------------------------------------------------------------------------------

class _Page(html.parser.HTMLParser):
    "A page's links (`href`/`src` of a, link, script, img), element ids, iframes and console-free text."
    def __init__(self):
        super().__init__(); self.links, self.ids, self.iframes = [], set(), 0
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == 'iframe': self.iframes += 1
        if a.get('id'): self.ids.add(a['id'])
        if tag == 'a' and a.get('name'): self.ids.add(a['name'])
        for k in ('href', 'src'):
            if a.get(k) and tag in ('a', 'link', 'script', 'img', 'source', 'iframe'): self.links.append(a[k])

def _pages(out:Path) -> dict:
    "{page: parsed page} for every HTML page of the site."
    res = {}
    for f in sorted(out.rglob('*.html')):
        rel = f.relative_to(out).as_posix()
        if rel.startswith('_static/'): continue
        res[rel] = _Page(); res[rel].feed(f.read_text(encoding='utf-8'))
    return res

def _target(page:str, href:str) -> tuple[str, str]|None:
    "The (file, anchor) an internal link points to, or None for an external one (a link to the published site is internal)."
    if href.startswith(SITE + '/') or href == SITE: href = os.path.relpath(href[len(SITE):].lstrip('/') or 'index.html', Path(page).parent.as_posix() or '.')
    if re.match(r'^[a-z][a-z0-9+.-]*:', href, re.I) or href.startswith('//'): return None
    path, _, frag = href.partition('#')
    path = path.split('?')[0]
    if not path: return page, frag
    t = os.path.normpath((Path(page).parent/path).as_posix())
    if path.endswith('/') or t == '.': t = (Path(t)/'index.html').as_posix()
    return t, frag

def test_site_has_every_page_in_the_sidebar(site):
    "Every notebook's page is in the navigation, in the sections of `nbs/_quarto.yml` (and no page is left out of it)."
    out, failed, _ = site
    pages = _pages(out)
    for p in ['index.html', 'search.html', 'genindex.html', 'core.html', *(_page(f'tutorials/{n}') for n in
              ('end_to_end.ipynb', 'tune_explain_card.ipynb', 'pipeline_serve_retrain.ipynb'))]:
        assert p in pages, (p, sorted(pages))
    body = (out/'index.html').read_text(encoding='utf-8')
    nav = body[body.index('sidebar-tree'):]
    for cap, nbs in docs_build.sidebar(NBS):
        if cap: assert f'>{cap}<' in nav, f"no sidebar section {cap!r}"
        hrefs = [_page(nb) for nb in nbs if nb != 'index.ipynb' and nb not in failed]
        pos = [nav.find(f'href="{h}"') for h in hrefs]
        assert -1 not in pos, f"not in the sidebar: {[h for h, i in zip(hrefs, pos) if i < 0]}"
        assert pos == sorted(pos), f"the sidebar's {cap or 'top'} section is not in _quarto.yml's order"
    assert '>More<' not in nav, "pages missing from nbs/_quarto.yml's sidebar"

def test_site_links_resolve(site):
    "Every internal link (pages, anchors, scripts, styles, images) resolves; no page has an iframe."
    out, failed, _ = site
    pages = _pages(out)
    assert len(pages) >= len(notebooks()), sorted(pages)
    failed_pages = {_page(nb) for nb in failed}
    broken, n = [], 0
    for p, parsed in pages.items():
        assert parsed.iframes == 0, f"{p} has an iframe"
        for href in parsed.links:
            t = _target(p, href)
            if t is None: continue
            n += 1
            path, frag = t
            if path in failed_pages: continue  # its notebook failed processing: test_notebooks_process_for_docs says so
            if not (out/path).is_file(): broken.append(f"{p}: {href} (no {path})")
            elif frag and path.endswith('.html') and frag not in pages[path].ids: broken.append(f"{p}: {href} (no #{frag} in {path})")
    assert n > 500, n  # the check sees the site's links
    assert not broken, "internal links that do not resolve:\n  " + '\n  '.join(sorted(set(broken)))

def test_site_api_pages_and_search_index(site):
    "The API pages carry nbdev's show_doc entries (signature with its docments, docstring, source link), and the search index knows them."
    out, _, _ = site
    core = (out/'core_errors.html').read_text(encoding='utf-8')  # nbs/01_core_errors.ipynb: mlnb/core/errors.py
    assert re.search(r'<section id="mlnberror"', core) and 'def MlnbError(' in re.sub(r'<[^>]+>', '', core), core[:2000]
    assert 'class="nbdev-source" href="https://github.com/mlnb/mlnb/blob/main/mlnb/core/errors.py#L' in core
    assert '# What went wrong, in one line' in re.sub(r'<[^>]+>', '', core), "no docments in core_errors.html's signatures"
    assert (out/'search.html').exists()
    idx = (out/'searchindex.js').read_text(encoding='utf-8')
    assert '"MlnbError"' in idx and '"mlnberror"' in idx, "the search index does not know MlnbError"
    assert '"tutorials/end_to_end"' in idx

def test_site_tutorials_show_saved_outputs(site):
    "Each tutorial page shows its saved views (mlnb's tables, the runs of tutorial 1), rendered, not executed."
    out, _, _ = site
    for n in ('end_to_end.ipynb', 'tune_explain_card.ipynb', 'pipeline_serve_retrain.ipynb'):
        body = (out/_page(f'tutorials/{n}')).read_text(encoding='utf-8')
        outputs = re.findall(r'<div class="cell_output docutils container">(.*?)</div>\s*</div>\s*</div>', body, re.S)
        assert outputs, f"{n}: no saved output on its page"
        assert re.search(r"class=.mlnb-table", ''.join(outputs)), f"{n}: no saved view in its outputs"
    e2e = (out/'tutorials'/'end_to_end.html').read_text(encoding='utf-8')
    for s in ('metrics.val_accuracy', 'logreg-C0.5', 'PROMOTED'): assert s in e2e, s

@pytest.fixture(scope='module')
def served(site):
    "The site over HTTP on loopback (as Pages serves it): its base URL."
    import functools, http.server, threading
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(site[0])))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_address[1]}/'
    srv.shutdown(); srv.server_close()

@pytest.mark.timeout(600)
def test_site_loads_in_chromium(site, served):
    "Every page loads with no console error, no failed or 4xx request, and no request outside the site; search finds the API."
    if not Path(CHROMIUM).exists(): pytest.skip(f"chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    sync_playwright = pytest.importorskip('playwright.sync_api').sync_playwright
    out, base = site[0], served
    errors, outside = [], []
    def on_response(r):
        if r.status >= 400: errors.append(f"{r.url}: HTTP {r.status}")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page()
        page.on('console', lambda m: errors.append(f"{page.url}: console.{m.type}: {m.text}") if m.type == 'error' else None)
        page.on('pageerror', lambda e: errors.append(f"{page.url}: {e}"))
        page.on('requestfailed', lambda r: errors.append(f"{page.url}: failed {r.url} ({r.failure})") if r.url.startswith(base) else None)
        page.on('response', on_response)
        page.route('**/*', lambda route: route.continue_() if route.request.url.startswith(base)
                   else (outside.append(f"{page.url}: {route.request.url}"), route.abort()))
        try:
            for p in _pages(out):
                page.goto(base + p, wait_until='load')
                if p not in ('search.html', 'genindex.html'): assert page.locator('h1').count() >= 1, f"{p} has no title"
            page.goto(base + 'search.html?q=MlnbError', wait_until='load')
            page.wait_for_selector('#search-results ul.search li a', timeout=20000)
            hits = page.locator('#search-results ul.search li a').evaluate_all('els => els.map(e => e.getAttribute("href"))')
            assert any(h.startswith('core_errors.html') for h in hits), hits
        finally: browser.close()
    assert not outside, "requests outside the site (it must be self-contained):\n  " + '\n  '.join(outside[:20])
    assert not errors, "errors loading the site:\n  " + '\n  '.join(errors[:40])

def test_pages_workflow_publishes_the_tested_build():
    "The Pages workflow builds with `scripts/docs.sh`, checks that build with this file, and uploads exactly it."
    import yaml
    wf = yaml.safe_load((ROOT/'.github'/'workflows'/'docs.yml').read_text())
    steps = wf['jobs']['build']['steps']
    runs = [s.get('run', '') for s in steps]
    build = [i for i, r in enumerate(runs) if re.search(r'^bash scripts/docs\.sh\b', r, re.M)]
    check = [i for i, r in enumerate(runs) if 'MLNB_DOCS_SITE=_docs' in r and 'tests/test_docs.py' in r]
    upload = [i for i, s in enumerate(steps) if s.get('uses', '').startswith('actions/upload-pages-artifact')]
    assert build and check and upload and build[0] < check[0] < upload[0], runs
    assert steps[upload[0]]['with']['path'] == '_docs'
    assert not any(re.search(r'quarto|nbdev-docs', r, re.I) for r in runs), "the site is built by scripts/docs.sh only"
    assert wf['jobs']['deploy']['needs'] == 'build' and wf['permissions']['pages'] == 'write'
    code = [l for l in (ROOT/'scripts'/'docs.sh').read_text().splitlines() if not l.lstrip().startswith(('#', 'echo'))]
    assert not [l for l in code if re.search(r'\b(pip|apt-get|npm|uv)\b.*\binstall\b', l)], "docs.sh installs nothing: the dev extra has the builder"

def test_no_iframes():
    "Widgets are ipywidgets views: no notebook output or module renders an iframe (they break in VS Code and Colab)."
    hits = [p.relative_to(ROOT).as_posix() for p in [*NBS.rglob('*.ipynb'), *(ROOT/'mlnb').rglob('*.py')]
            if re.search(r'<iframe|IFrame\(', p.read_text(errors='ignore'), re.I)]
    assert not hits, f"iframes in: {hits}"
