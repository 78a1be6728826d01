"""Benchmark `mlnb data` against DVC doing the same work, in one process; one JSON line per case.

    python benchmarks/data.py [--repeats N] [--size-mb MB] [--files N] [--cases big,files,status]

What each side does (like with like: the issue's `add` is dvc add + commit of the .dvc file + push):
- mlnb: `mlnb.data.versions.add(path)` = its checks (inside the project, not git-ignored or git-tracked, a git identity; tables
  are parsed and profiled, the `.bin` files here are not), a snapshot for rollback, `dvc add` through DVC's `Repo.add`,
  a push of that version's objects to the project's local remote through DVC's object transfer (`repo.cloud.push`),
  `git add` + `git commit` of the `.dvc` file and the `.gitignore` beside it.
- peer: what a user types, through DVC's own API and git: `dvc add PATH` (`Repo.add`), `dvc push PATH.dvc`
  (`Repo.push`), `git add PATH.dvc .gitignore` + `git commit`.
  Both open a DVC `Repo` once per add. The push is not overlapped with the commit on either side.

Cases (issue 4):
- `add 1GB vs dvc add`: a 1 GB file. Target ratio >= 0.9 (mlnb's overhead <= 10%).
- `add 1GB vs dvc add (no push, no commit)`: `add(path, push=False, commit=False)` (mlnb still stages the .dvc file)
  against a bare `Repo.add`.
- `add 2000 files vs dvc add`: the same two workflows on a folder of 2000 files of 1 KB. Target ratio >= 0.9.
- `add 2000 files vs dvc add (no push, no commit)`.
- `no-change status 2000 files`: `mlnb.data.versions.status()` against `Repo.status()` (each opens the repo), on a committed
  folder of 2000 files that did not change; DVC's hash state db, filled by the add, serves both. Target mlnb <= 1 s.
- `no-change status 2000 files (CLI)`: `mlnb data status` against `dvc status` as commands (process start and
  imports included: the `dvc` import alone takes most of a second, so this one has no target).

Robust on a shared machine: each side works in its own project; each repeat adds fresh random content (no cache or
hash state helps either side), written and synced before the clock starts; the two sides alternate in ABBA order,
so load hits both alike. "mlnb" and "peer" are the medians, "ratio" the median of the paired ratios peer_i/mlnb_i;
"runs" lists every time.
"""
import sys, os
# this folder holds other benchmarks (e.g. logging.py) that must not shadow the standard library
sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') != os.path.dirname(os.path.abspath(__file__))]
import argparse, json, logging, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ENV = {'DVC_NO_ANALYTICS': '1', 'GIT_AUTHOR_NAME': 'bench', 'GIT_AUTHOR_EMAIL': 'bench@mlnb.local',
       'GIT_COMMITTER_NAME': 'bench', 'GIT_COMMITTER_EMAIL': 'bench@mlnb.local'}
os.environ.update(ENV)

def git(*args, cwd): subprocess.run(['git', *args], cwd=cwd, check=True, capture_output=True)

def fresh_file(p:Path, size:int):
    "Random bytes (so no cache or hash state can help either side)."
    with open(p, 'wb') as f:
        left = size
        while left: n = min(left, 64 << 20); f.write(os.urandom(n)); left -= n

def fresh_folder(p:Path, n:int):
    p.mkdir(parents=True)
    for i in range(n): (p/f"f{i:05d}.bin").write_bytes(os.urandom(1024))

def clean(root:Path, rel:str):
    "Drop a benchmark path: its data, .dvc file, cache and remote objects (keep the disk small between repeats)."
    p = root/rel
    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    (root/f"{rel}.dvc").unlink(missing_ok=True)
    for d in (root/'.dvc/cache', root/'.mlnb/dvc-remote'):
        shutil.rmtree(d, ignore_errors=True)
    (root/'.mlnb/dvc-remote').mkdir(parents=True, exist_ok=True)

def mlnb_add(root, rel, full):
    from mlnb.data import add
    t = time.perf_counter()
    r = add(root/rel, root=root, **({} if full else dict(push=False, commit=False)))
    dt = time.perf_counter() - t
    assert r.changed and r.pushed == full and bool(r.commit) == full
    return dt

def dvc_add(root, rel, full):
    from dvc.repo import Repo
    t = time.perf_counter()
    with Repo(str(root)) as repo:
        repo.add([str(root/rel)])
        if full: repo.push([str(root/f"{rel}.dvc")])
    if full:
        files = [f"{rel}.dvc", str(Path(rel).parent/'.gitignore')]
        git('add', '--', *files, cwd=root)
        git('commit', '-q', '-m', f"add {rel}", '--', *files, cwd=root)
    return time.perf_counter() - t

def pushed_all(root:Path, n:int) -> bool:
    "The remote holds the whole version (every file of a folder, and its manifest)."
    return sum(len(f) for _, _, f in os.walk(root/'.mlnb/dvc-remote')) >= n

def line(case, times:dict, **extra):
    m, p = statistics.median(times['mlnb']), statistics.median(times['peer'])
    ratio = statistics.median(b / a for a, b in zip(times['mlnb'], times['peer']))
    print(json.dumps({"bench": "data", "case": case, "mlnb": round(m, 4), "peer": round(p, 4), "unit": "s", "ratio": round(ratio, 3),
                      **extra, "runs": {k: [round(x, 3) for x in v] for k, v in times.items()}}), flush=True)

def bench_add(case, roots, make, n_objects, repeats, full, **extra):
    times = {'mlnb': [], 'peer': []}
    for i in range(repeats):  # ABBA order: neither side always runs first
        for side, fn in (('mlnb', mlnb_add), ('peer', dvc_add)) if i % 4 in (0, 3) else (('peer', dvc_add), ('mlnb', mlnb_add)):
            root, rel = roots[side], f"data/{case.split()[1]}{'-full' if full else ''}-{i}"
            make(root/rel)
            os.sync()  # the input is on disk before the clock starts, for both sides
            times[side].append(fn(root, rel, full))
            if full: assert pushed_all(root, n_objects), f"{side} did not push all of {rel}"
            clean(root, rel)
            os.sync()
    line(case, times, repeats=repeats, **extra)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--size-mb', type=int, default=1024)
    ap.add_argument('--files', type=int, default=2000)
    ap.add_argument('--cases', default='big,files,status', help="which groups of cases to run: big, files, status")
    a = ap.parse_args()
    logging.getLogger('dvc').setLevel(logging.ERROR)
    from mlnb.project import init
    tmp = Path(tempfile.mkdtemp(prefix='mlnb-bench-data-'))
    try:
        roots = {side: init(tmp/side).root for side in ('mlnb', 'peer')}
        for r in roots.values(): (r/'data').mkdir()
        size = a.size_mb << 20
        label = f"{a.size_mb // 1024}GB" if a.size_mb % 1024 == 0 else f"{a.size_mb}MB"
        cases = set(a.cases.split(','))
        if 'big' in cases:
            bench_add(f"add {label} vs dvc add", roots, lambda p: fresh_file(p, size), 1, a.repeats, full=True, target_ratio=0.9)
            bench_add(f"add {label} vs dvc add (no push, no commit)", roots, lambda p: fresh_file(p, size), 1, a.repeats, full=False)
        if 'files' in cases:
            bench_add(f"add {a.files} files vs dvc add", roots, lambda p: fresh_folder(p, a.files), a.files + 1, a.repeats, full=True, target_ratio=0.9)
            bench_add(f"add {a.files} files vs dvc add (no push, no commit)", roots, lambda p: fresh_folder(p, a.files), a.files + 1, a.repeats, full=False)

        if 'status' not in cases: return
        # no-change status: one tracked folder of N files, nothing changed
        from mlnb.data import add, status
        from dvc.repo import Repo
        root = roots['mlnb']
        fresh_folder(root/'data/files', a.files)
        add(root/'data/files', root=root)
        status(root=root)  # both sides start from the same warm state (DVC's hash state db is filled by `add`)
        times = {'mlnb': [], 'peer': []}
        for i in range(max(a.repeats, 5)):
            for side in (('mlnb', 'peer') if i % 4 in (0, 3) else ('peer', 'mlnb')):
                t = time.perf_counter()
                if side == 'mlnb': s = status(root=root)
                else:
                    with Repo(str(root)) as repo: raw = repo.status()
                times[side].append(time.perf_counter() - t)
            assert s.clean and raw == {} and s.dvc == raw
        line(f"no-change status {a.files} files", times, repeats=len(times['mlnb']), target_mlnb_s=1.0)
        times = {'mlnb': [], 'peer': []}
        for i in range(max(a.repeats, 5)):
            for side in (('mlnb', 'peer') if i % 4 in (0, 3) else ('peer', 'mlnb')):
                cmd = [sys.executable, '-m', 'mlnb.cli', 'data', 'status'] if side == 'mlnb' else [sys.executable, '-m', 'dvc', 'status']
                t = time.perf_counter(); subprocess.run(cmd, cwd=root, check=True, capture_output=True); times[side].append(time.perf_counter() - t)
        line(f"no-change status {a.files} files (CLI)", times, repeats=len(times['mlnb']))
    finally: shutil.rmtree(tmp, ignore_errors=True)

if __name__ == '__main__': main()
