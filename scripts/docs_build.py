"""Build the docs site: nbdev's docs processing of `nbs/`, then Sphinx with MyST-NB, into `_docs/` (what the Pages
workflow publishes and `tests/test_docs.py` checks). Run it through `bash scripts/docs.sh`.

1. A snapshot of `nbs/` and `pyproject.toml` goes to the work folder (`_proc/` unless `--work`), and each notebook
   goes through nbdev's processing (`nbdev.serve._proc_file` + `nbdev.serve_drv.main`, what `nbdev-proc-nbs` does:
   front matter, directives, `show_doc` cells added and executed with the exported code). Nothing else is executed:
   the tutorials keep their saved outputs. Processed notebooks are cached by modification time, as nbdev caches them
   (a changed pyproject.toml redoes all; `--force` too, after a change in `mlnb/` that a notebook's show_doc shows).
2. Each processed notebook becomes a Sphinx page named as nbdev names it (`00_core.ipynb` -> `core.html`): Quarto's
   cell options become MyST-NB tags (`echo: false` hides the code, `output: asis` makes the output part of the page,
   as `show_doc`'s markdown is), links to the published site and to notebooks become relative links to pages, and
   every heading also gets the id Quarto/pandoc would give it (`#run.log`), which nbdev's API links use.
3. Sphinx builds the HTML (theme furo, built-in search) with the sidebar of `nbs/_quarto.yml`: the index, then one
   captioned section per sidebar section.

Exit status 1 when a notebook fails processing (all failures are listed; `--keep-going` still builds the rest).
"""
import argparse, json, os, re, shutil, subprocess, sys, time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# ---- 1. nbdev's processing ----------------------------------------------------------------------------------------

def notebooks(nbs:Path) -> list[str]:
    "The site's notebooks under `nbs` (as nbdev globs them: no `_`/`.`-prefixed files or folders)."
    return sorted(p.relative_to(nbs).as_posix() for p in nbs.rglob('*.ipynb')
                  if not any(s.startswith(('_', '.')) for s in p.relative_to(nbs).parts))

def _proc_one(work:str, rel:str):
    "Process `nbs/rel` into `_proc/rel` inside `work` (a worker process); returns (rel, seconds, error or None)."
    t0 = time.time()
    os.chdir(work)  # nbdev finds its settings (pyproject.toml) from the working directory
    try:
        from nbdev.serve import _proc_file
        import nbdev.serve_drv
        # relative paths: nbdev skips a notebook whose path has a `_proc`, `_docs` or `.`-named part (the default work
        # folder is `_proc/`, and a checkout may live under a dot folder)
        o = _proc_file(Path('nbs', rel), cache=Path('_proc'), path=Path('nbs'))
        if o: nbdev.serve_drv.main(o)
        if not Path('_proc', rel).exists(): raise RuntimeError('nbdev wrote no processed notebook')
        return rel, time.time() - t0, None
    except BaseException as e:  # a notebook's SystemExit too: report it, keep the worker
        lines = [l for l in f"{type(e).__name__}: {e}".strip().splitlines() if l.strip()]
        err = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
        return rel, time.time() - t0, err[:400]

def process(work:Path, jobs:int, force:bool=False, fresh:bool=False) -> dict:
    "Snapshot `nbs/` into `work` and process every notebook; returns {notebook: error or None}."
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT/'pyproject.toml', work/'pyproject.toml')
    if (work/'nbs').exists(): shutil.rmtree(work/'nbs')
    shutil.copytree(ROOT/'nbs', work/'nbs', ignore=lambda d, names: [n for n in names if n.startswith('.') or ':' in n or n == '__pycache__'])
    stamp = work/'_proc'/'.processed'  # as nbdev's cache: new settings (pyproject.toml) redo every notebook
    if (work/'_proc').exists() and (force or not stamp.exists() or (ROOT/'pyproject.toml').stat().st_mtime > stamp.stat().st_mtime):
        shutil.rmtree(work/'_proc')
    nbs = notebooks(work/'nbs')
    res = {}
    import multiprocessing
    os.environ.setdefault('DVC_NO_ANALYTICS', '1')
    # The worker runs `_proc_one` from this file imported as `docs_build`, not as `__main__`: nbdev's shell replaces
    # `sys.modules['__main__']` in the worker. One notebook per worker process (`fresh`) keeps notebooks from seeing
    # each other's state, at the cost of importing mlnb each time.
    sys.path.insert(0, str(Path(__file__).parent))
    import docs_build
    with ProcessPoolExecutor(max(1, jobs), mp_context=multiprocessing.get_context('spawn'),
                             max_tasks_per_child=1 if fresh else None) as ex:
        futs = [ex.submit(docs_build._proc_one, str(work), rel) for rel in nbs]
        for f in as_completed(futs):
            try: rel, secs, err = f.result()
            except Exception as e:  # the worker died (the pool is broken: the rest report it too)
                rel, secs, err = nbs[futs.index(f)], 0, f"worker died: {type(e).__name__}: {e}"
            res[rel] = err
            print(f"  {'FAILED ' if err else ''}{rel} ({secs:.0f} s){': ' + err if err else ''}", flush=True)
    stamp.parent.mkdir(parents=True, exist_ok=True); stamp.touch()
    return res

# ---- 2. Sphinx sources --------------------------------------------------------------------------------------------

def page_of(rel:str, nb:dict|None=None) -> str:
    "The page of a notebook, as nbdev names it: its front matter's `output-file`, or the name without the number prefix."
    p = Path(rel)
    fm = front_matter(nb) if nb else {}
    name = fm.get('output-file') or re.sub(r'^\d+_', '', p.stem) + '.html'
    return (p.parent/name).as_posix()

def front_matter(nb:dict) -> dict:
    "nbdev's front matter (the first raw cell, `---` YAML `---`), or {}."
    c0 = nb['cells'][0] if nb.get('cells') else {}
    src = ''.join(c0.get('source', ''))
    if c0.get('cell_type') != 'raw' or not src.lstrip().startswith('---'): return {}
    import yaml
    return yaml.safe_load(src.strip().strip('-')) or {}

def pandoc_id(title:str) -> str:
    "The id pandoc (so Quarto, and nbdev's links) gives a heading: lower case, only letters, digits, `_-.`, spaces to `-`."
    t = re.sub(r'[^\w\s.-]', '', title.lower())
    t = re.sub(r'\s+', '-', t.strip())
    return re.sub(r'^[^a-z]+', '', t) or 'section'

_LINK = re.compile(r'(\]\(\s*<?|href=["\'])([^)"\'\s>]+)')

def rewrite_links(text:str, rel:str, pages:dict, site:str) -> str:
    "Links to the published site and to notebooks become relative links to this build's pages."
    here = Path(page_of(rel)).parent
    def fix(m):
        url = m.group(2)
        path, hash_, frag = url.partition('#')
        if url.startswith(site + '/') or url == site:
            target = path[len(site):].lstrip('/') or 'index.html'
        elif re.match(r'^[a-z][a-z0-9+.-]*:', url, re.I) or url.startswith(('/', '#')): return m.group(0)
        elif path.endswith('.ipynb'):
            nb = os.path.normpath((Path(rel).parent/path).as_posix())
            if nb not in pages: return m.group(0)
            target = pages[nb]
        else: return m.group(0)
        if target.endswith('/'): target += 'index.html'
        return m.group(1) + os.path.relpath(target, here).replace(os.sep, '/') + hash_ + frag
    return _LINK.sub(fix, text)

_SOURCE = re.compile(r'\[source\]\((\S+?)\)(\{[^}]*\})?')

def show_doc_md(md:str) -> str:
    "`show_doc`'s markdown, as page content: no leading rule (the heading has one), the source link after the heading."
    md = re.sub(r'^\s*---\s*\n', '', md)
    m = _SOURCE.search(md)
    if not m: return md
    link = f'<a class="nbdev-source" href="{m.group(1)}" target="_blank" rel="noopener">source</a>'
    md = (md[:m.start()] + md[m.end():]).lstrip()
    h = re.search(r'^#{1,6} .*$', md, re.M)
    return md[:h.end()] + '\n\n' + link + md[h.end():] if h else link + '\n\n' + md

def _directives(src:str) -> tuple[dict, str]:
    "Quarto's `#| key: value` cell options at the top of a code cell, and the code without them."
    lines, opts = src.splitlines(), {}
    while lines and lines[0].startswith('#|'):
        k, _, v = lines.pop(0)[2:].partition(':')
        opts[k.strip()] = v.strip().lower()
    return opts, '\n'.join(lines)

def _text(x) -> str: return ''.join(x) if isinstance(x, list) else str(x)

def _md(src:str) -> dict: return {'cell_type': 'markdown', 'metadata': {}, 'source': src}

def to_page(nb:dict, rel:str, pages:dict, site:str) -> dict:
    "A processed notebook as the Sphinx page's source (a notebook MyST-NB renders from its saved outputs)."
    fm = front_matter(nb)
    cells = []
    if fm: cells.append(_md(f"# {fm.get('title', Path(rel).stem)}" + (f"\n\n{fm['description']}" if fm.get('description') else '')))
    for c in nb['cells'][1 if fm else 0:]:
        src = _text(c.get('source', ''))
        if c['cell_type'] == 'raw': continue
        if c['cell_type'] == 'markdown':
            if src.strip().startswith('<!-- WARNING: THIS FILE WAS AUTOGENERATED'): continue
            cells.append({**_md(rewrite_links(src, rel, pages, site)), **({'attachments': c['attachments']} if c.get('attachments') else {})})
            continue
        opts, code = _directives(src)
        if opts.get('include') == 'false' or 'hide' in opts: continue
        outs = [o for o in c.get('outputs', []) if 'application/vnd.jupyter.widget-view+json' not in o.get('data', {})
                or len(o['data']) > 1]
        for o in outs:
            o.get('data', {}).pop('application/vnd.jupyter.widget-view+json', None)
            for k in ('text/html', 'text/markdown'):
                if k in o.get('data', {}): o['data'][k] = rewrite_links(_text(o['data'][k]), rel, pages, site)
        tags = []
        if opts.get('echo') == 'false': tags.append('remove-input')
        if opts.get('output') == 'false': tags.append('remove-output')
        if opts.get('output') == 'asis':  # the markdown output is page content (show_doc)
            if opts.get('echo') != 'false' and code.strip():
                cells.append({'cell_type': 'code', 'metadata': {}, 'source': code, 'outputs': [], 'execution_count': None})
            for o in outs:
                d = o.get('data', {})
                if 'text/markdown' in d: cells.append(_md(show_doc_md(_text(d['text/markdown']))))
                elif 'text/html' in d: cells.append(_md(_text(d['text/html'])))
            continue
        if not code.strip() and not outs: continue
        cells.append({'cell_type': 'code', 'metadata': {'tags': tags} if tags else {}, 'source': code,
                      'outputs': outs, 'execution_count': None})
    return {'nbformat': 4, 'nbformat_minor': 5, 'cells': cells,
            'metadata': {'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'},
                         'language_info': {'name': 'python'}}}

def sidebar(nbs:Path) -> list[tuple[str|None, list[str]]]:
    "The sidebar of `nbs/_quarto.yml`: [(section caption or None, [notebook, ...]), ...]."
    import yaml
    q = yaml.safe_load((nbs/'_quarto.yml').read_text()) if (nbs/'_quarto.yml').exists() else {}
    out = [(None, [])]
    def flat(xs):
        for x in xs:
            if isinstance(x, str): yield x
            elif isinstance(x, dict):
                if 'href' in x: yield x['href']
                yield from flat(x.get('contents', []))
    for x in (((q.get('website') or {}).get('sidebar') or {}).get('contents') or []):
        if isinstance(x, dict) and 'section' in x: out.append((x['section'], list(flat(x.get('contents', [])))))
        else: out[0][1].extend(flat([x]))
    return out

CSS = """/* mlnb's docs: nbdev's API entries and the saved views of mlnb's widgets */
.nbdev-source { float: right; font-size: smaller; }
section > h3, section > h4 { border-top: 1px solid var(--color-background-border); padding-top: 0.6rem; }
.cell_output .output.text_html { overflow-x: auto; }
.mlnb-table { font-size: 0.85em; border-collapse: collapse; margin-bottom: 0.8rem; }
.mlnb-table th, .mlnb-table td { padding: 2px 8px; white-space: nowrap; text-align: left; border-bottom: 1px solid rgba(128, 128, 128, 0.3); }
.mlnb-table caption { caption-side: top; font-weight: 600; color: inherit; }
.mlnb-card h1 { font-size: 1.4rem; }
.mlnb-card h2 { font-size: 1.1rem; }
"""

CONF = '''# Written by scripts/docs_build.py: edit it there.
import re
project = {title!r}
html_title = {title!r}
html_baseurl = {site!r}
extensions = ['myst_nb']
root_doc = 'index'
exclude_patterns = ['_build', '**.ipynb_checkpoints']
nb_execution_mode = 'off'           # the pages show the notebooks' saved outputs (and nbdev's show_doc output)
nb_ipywidgets_js = {{}}              # no widget manager from a CDN: the site is self-contained
myst_all_links_external = True      # links were made relative to the pages by scripts/docs_build.py
myst_enable_extensions = ['html_image']
suppress_warnings = ['myst.header']  # show_doc's H3 entries may follow the title directly
html_theme = 'furo'
html_static_path = ['_static']
html_css_files = ['mlnb-docs.css']
html_copy_source = False
html_show_sourcelink = False

def _pandoc_id(title):
    t = re.sub(r'[^\\w\\s.-]', '', title.lower())
    t = re.sub(r'\\s+', '-', t.strip())
    return re.sub(r'^[^a-z]+', '', t) or 'section'

def _quarto_ids(app, doctree, docname):
    "Every heading also gets the id Quarto gives it (nbdev links API entries to those: `core.html#run.log`)."
    from docutils import nodes
    used = set(i for n in doctree.findall(nodes.Element) for i in n.get('ids', []))
    for sec in doctree.findall(nodes.section):
        i = _pandoc_id(sec[0].astext()) if len(sec) and isinstance(sec[0], nodes.title) else None
        if i and i not in used: sec['ids'].append(i); used.add(i)

def setup(app): app.connect('doctree-resolved', _quarto_ids)
'''

def write_if_changed(p:Path, text:str):
    "Write `text` to `p` unless it already holds it (Sphinx rebuilds only what changed)."
    p.parent.mkdir(parents=True, exist_ok=True)
    if not p.exists() or p.read_text(encoding='utf-8') != text: p.write_text(text, encoding='utf-8')

def sources(work:Path, res:dict) -> Path:
    "Write the Sphinx project (pages, conf.py, css) into `work/src` from the processed notebooks; returns that folder."
    import yaml
    proc, src = work/'_proc', work/'src'
    meta = yaml.safe_load((work/'nbs'/'nbdev.yml').read_text()) if (work/'nbs'/'nbdev.yml').exists() else {}
    web = meta.get('website', {})
    site = web.get('site-url', '').rstrip('/')
    nbs = {rel: json.loads((proc/rel).read_text(encoding='utf-8')) for rel in res if not res[rel] and (proc/rel).exists()}
    pages = {rel: page_of(rel, nbs.get(rel)) for rel in res}
    written = set()
    for rel, nb in nbs.items():
        page = to_page(nb, rel, pages, site)
        if rel == 'index.ipynb': page['cells'].append(_md(toctrees(work/'nbs', pages)))
        dest = src/(pages[rel][:-len('.html')] + '.ipynb')
        write_if_changed(dest, json.dumps(page, indent=1, ensure_ascii=False))
        written.add(dest)
    for p in src.rglob('*.ipynb'):  # pages of notebooks that are gone (or failed this time)
        if p not in written: p.unlink()
    write_if_changed(src/'_static'/'mlnb-docs.css', CSS)
    write_if_changed(src/'conf.py', CONF.format(title=web.get('title', 'mlnb'), site=site + '/'))
    return src

def toctrees(nbs:Path, pages:dict) -> str:
    "The index page's (hidden) toctrees: the sidebar of `_quarto.yml`, one captioned toctree per section."
    listed, out = set(), []
    def entries(xs):
        for x in xs:
            listed.add(x)
            if x in pages and x != 'index.ipynb': yield pages[x][:-len('.html')]
    for cap, xs in sidebar(nbs):
        es = list(entries(xs))
        if es: out.append(('', es) if cap is None else (cap, es))
    rest = [pages[x][:-len('.html')] for x in sorted(pages) if x not in listed and x != 'index.ipynb']
    if rest: out.append(('More', rest))
    return '\n\n'.join("```{toctree}\n:hidden:\n" + (f":caption: {cap}\n" if cap else '') + '\n' + '\n'.join(es) + '\n```'
                       for cap, es in out)

# ---- 3. Sphinx ----------------------------------------------------------------------------------------------------

def sphinx(src:Path, out:Path, work:Path, jobs:int) -> int:
    "Build the HTML site from `src` into `out`; returns Sphinx's exit status (warnings go to `work/sphinx-warnings.log`)."
    cmd = [sys.executable, '-m', 'sphinx', '-b', 'html', '-q', '-j', str(max(1, jobs)), '-d', str(work/'doctrees'),
           '-w', str(work/'sphinx-warnings.log'), str(src), str(out)]
    return subprocess.run(cmd).returncode

class _Ids(__import__('html.parser').parser.HTMLParser):
    "The ids (and `<a name>`s) of a page."
    def __init__(self):
        super().__init__(); self.ids = set()
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get('id'): self.ids.add(a['id'])
        if tag == 'a' and a.get('name'): self.ids.add(a['name'])

_API_LINK = re.compile(r'(<a\b[^>]*?\bhref=")([^"#:]*)#([^"]+)("[^>]*>\s*<code\b[^>]*>)(.*?)(</code>\s*</a>)', re.S)

def fix_api_links(out:Path) -> list[str]:
    """nbdev links every backticked name it knows (`_modidx`), documented or not: a link to a method or private name
    that has no entry on its page goes to its class's entry (`#tuneresult.apply` -> `#tuneresult`), or else to the
    page. Returns what it changed (`page: name -> target`). Only links that are a code name are touched."""
    ids = {}
    for f in out.rglob('*.html'):
        if '_static' in f.relative_to(out).parts: continue
        p = _Ids(); p.feed(f.read_text(encoding='utf-8')); ids[f.relative_to(out).as_posix()] = p.ids
    changed = []
    for page in ids:
        f = out/page
        def fix(m):
            path, frag = m.group(2), m.group(3)
            target = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            have = ids.get(target.replace(os.sep, '/'))
            name = re.sub(r'<[^>]+>', '', m.group(5)).strip().rstrip('()').lower()
            if have is None or frag in have or not name.endswith(frag.lower().split('.')[-1]): return m.group(0)
            cls = frag.rsplit('.', 1)[0] if '.' in frag else None
            new = f"{path}#{cls}" if cls and cls in have else (path or os.path.basename(page))
            changed.append(f"{page}: {name} -> {new}")
            return m.group(1) + new + m.group(4) + m.group(5) + m.group(6)
        text = f.read_text(encoding='utf-8')
        new = _API_LINK.sub(fix, text)
        if new != text: f.write_text(new, encoding='utf-8')
    return changed

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', default=str(ROOT/'_docs'), help="the site's folder (default _docs/)")
    ap.add_argument('--work', default=str(ROOT/'_proc'), help='processed notebooks, Sphinx sources and caches (default _proc/)')
    ap.add_argument('--jobs', type=int, default=min(4, os.cpu_count() or 1), help='processes for nbdev and Sphinx')
    ap.add_argument('--force', action='store_true', help='process every notebook again and rebuild every page')
    ap.add_argument('--keep-going', action='store_true', help='build the site from the notebooks that processed, and exit 1 after')
    a = ap.parse_args(argv)
    out, work = Path(a.out).absolute(), Path(a.work).absolute()
    t0 = time.time()
    print(f"== nbdev's docs processing ({work/'_proc'})", flush=True)
    res = process(work, a.jobs, a.force, os.environ.get('MLNB_DOCS_FRESH') == '1')
    failed = {k: v for k, v in res.items() if v}
    (work/'failures.json').write_text(json.dumps(failed, indent=1))
    if failed and not a.keep_going:
        sys.exit("nbdev's docs processing fails on:\n" + '\n'.join(f"  {k}: {v}" for k, v in sorted(failed.items())))
    print(f"== Sphinx ({out})", flush=True)
    if a.force and out.exists(): shutil.rmtree(out)
    if a.force and (work/'doctrees').exists(): shutil.rmtree(work/'doctrees')
    rc = sphinx(sources(work, res), out, work, a.jobs)
    if rc: sys.exit(f"sphinx failed (exit {rc})")
    changed = fix_api_links(out)
    if changed: print(f"  {len(changed)} links to names without an entry of their own now go to their class or page:\n    "
                       + '\n    '.join(sorted(set(changed))))
    warns = (work/'sphinx-warnings.log').read_text().strip() if (work/'sphinx-warnings.log').exists() else ''
    print(f"== built {out} in {time.time() - t0:.0f} s" + (f" ({len(warns.splitlines())} warning lines: {work/'sphinx-warnings.log'})" if warns else ''))
    if failed: sys.exit("nbdev's docs processing fails on:\n" + '\n'.join(f"  {k}: {v}" for k, v in sorted(failed.items())))

if __name__ == '__main__': main()
