"""The house's rules, checked from the source: arrows point down (faces → features → ground), no import circles,
no `_private` name taken from another module, and no feature that imports ipywidgets or the widgets.

The import graph is built with `ast` from every module of the package, imports inside functions included."""
import ast, re
from pathlib import Path
import pytest

PKG = Path(__file__).resolve().parents[1]/'mlnb'
GROUND = {'core', 'config', 'project', 'audit'}  # ground: everything else may stand on it
def _is_face(mod): return mod in ('cli', 'magics') or mod.split('.')[0] == 'widgets' or mod.startswith('widgets')
def _layer(mod):
    if _is_face(mod): return 2
    return 0 if mod.split('.')[0] in GROUND else 1

def _modules():
    out = {}
    for p in sorted(PKG.rglob('*.py')):
        rel = p.relative_to(PKG).with_suffix('')
        if rel.name.startswith('_') and rel.name != '__init__': continue
        parts = rel.parts[:-1] if rel.name == '__init__' else rel.parts
        if parts: out['.'.join(parts)] = p
    return out

MODS = _modules()

def _target(mod, node):
    "The mlnb modules (names relative to the package) an import node points at, with the names it takes."
    pkg = mod.split('.')[:-1] if not MODS[mod].name == '__init__.py' else mod.split('.')
    if isinstance(node, ast.Import):
        return [(a.name[5:], None) for a in node.names if a.name.startswith('mlnb.')]
    if node.level:
        base = pkg[:len(pkg) - node.level + 1] if node.level > 1 else pkg
        name = '.'.join(base + ([node.module] if node.module else []))
    elif node.module and (node.module == 'mlnb' or node.module.startswith('mlnb.')): name = node.module[5:]
    else: return []
    out = []
    for a in node.names:
        sub = f"{name}.{a.name}" if name else a.name
        if sub in MODS: out.append((sub, None))  # `from mlnb import data`: a module
        elif name: out.append((name, a.name))
    return out

def _graph():
    edges, private, widgets = {}, [], []
    for mod, path in MODS.items():
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                if isinstance(node, ast.Import) and any(a.name.split('.')[0] == 'ipywidgets' for a in node.names) or \
                   isinstance(node, ast.ImportFrom) and (node.module or '').split('.')[0] == 'ipywidgets':
                    widgets.append((mod, 'ipywidgets', node.lineno))
                for tgt, name in _target(mod, node):
                    if tgt == mod or tgt not in MODS and tgt != '': continue
                    if tgt: edges.setdefault(mod, set()).add(tgt)
                    if name and name.startswith('_') and not name.startswith('__'): private.append((mod, f"{tgt}.{name}", node.lineno))
                if isinstance(node, ast.ImportFrom):
                    for a in node.names:
                        for tgt, name in _target(mod, ast.ImportFrom(module=node.module, names=[a], level=node.level)):
                            if name is None: aliases[a.asname or a.name] = tgt
                else:
                    for a in node.names:
                        if a.name.startswith('mlnb.') and a.asname: aliases[a.asname] = a.name[5:]
        for node in ast.walk(tree):  # `registry._client(...)`, `mlnb.serving.registry._client`
            if isinstance(node, ast.Attribute) and node.attr.startswith('_') and not node.attr.startswith('__'):
                v = node.value
                if isinstance(v, ast.Name) and v.id in aliases and aliases[v.id] != mod:
                    private.append((mod, f"{aliases[v.id]}.{node.attr}", node.lineno))
                elif isinstance(v, ast.Attribute) and isinstance(v.value, ast.Name) and v.value.id == 'mlnb' and v.attr in MODS and v.attr != mod:
                    private.append((mod, f"{v.attr}.{node.attr}", node.lineno))
    return edges, private, widgets

EDGES, PRIVATE, WIDGETS = _graph()

def _cycles(edges):
    "Strongly connected components with more than one module (Tarjan)."
    index, low, stack, on, out, i = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index: visit(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(sorted(comp))
    for v in sorted(MODS): 
        if v not in index: visit(v)
    return out

def test_graph_sees_the_package():
    assert {'core', 'core.verbs', 'cli', 'magics', 'serving.server', 'widgets.base'} <= set(MODS)
    assert 'core' in EDGES['cli']  # the CLI stands on core

def test_no_import_circles():
    assert _cycles(EDGES) == [], "import circles: " + '; '.join(' <-> '.join(c) for c in _cycles(EDGES))

def test_arrows_point_down():
    up = [f"{a} -> {b}" for a, bs in EDGES.items() for b in bs if _layer(b) > _layer(a)]
    assert up == [], "upward imports: " + ', '.join(sorted(up))

def test_no_private_names_across_modules():
    assert PRIVATE == [], "private names imported from another module: " + ', '.join(f"{m}:{l} uses {n}" for m, n, l in PRIVATE)

def test_modules_import_modules_not_facades():
    """A package's `__init__` re-exports its modules for users; inside mlnb a module imports the module it needs, so a
    package is never used half-initialised. Only `core`, which imports nothing of mlnb beyond itself, is used whole."""
    pkgs = {m for m, p in MODS.items() if p.name == '__init__.py'}
    bad = [f"{a} -> {b}" for a, bs in EDGES.items() for b in bs
           if b in pkgs and not a.startswith(b + '.') and (b != 'core' or a.startswith('core.'))]
    assert bad == [], "imports of a package facade: " + ', '.join(sorted(bad))

def _floor(mod):
    "The number of the notebook a module is exported from (`nbs/12_track_tracking.ipynb` -> 12)."
    m = re.search(r"File to edit: [./]*nbs/(\d+)_", MODS[mod].read_text())
    return int(m.group(1)) if m else None

def test_notebooks_in_floor_order():
    """Reading `nbs/` top to bottom is reading the house from the ground up: a module's notebook comes after those of
    the modules it imports (a package's own notebook, which gathers its modules, excepted)."""
    bad = [f"{a} ({_floor(a)}) -> {b} ({_floor(b)})" for a, bs in EDGES.items() for b in bs
           if not a.startswith(b + '.') and not b.startswith(a + '.') and None not in (_floor(a), _floor(b)) and _floor(b) >= _floor(a)]
    assert bad == [], "a notebook before what it imports: " + ', '.join(sorted(bad))

def test_features_know_no_widgets():
    bad = [(m, w, l) for m, w, l in WIDGETS if not _is_face(m)]
    bad += [(m, t, 0) for m, ts in EDGES.items() for t in ts if _is_face(t) and not _is_face(m)]
    assert bad == [], f"features importing widgets or faces: {bad}"

def test_checker_finds_circles():
    "The checker itself: a circle in a made-up graph is found, a chain is not."
    global MODS
    saved = MODS
    try:
        MODS = {k: None for k in 'wxyz'}
        assert _cycles({'x': {'y'}, 'y': {'z'}, 'z': {'x'}, 'w': {'x'}}) == [['x', 'y', 'z']]
        assert _cycles({'x': {'y'}, 'y': {'z'}, 'w': {'x'}}) == []
    finally: MODS = saved
