"""mlnb.drift against Evidently's DataDriftPreset on the same data, in one process.

Prints one JSON line per case:
{"bench": "drift", "case": ..., "mlnb": s, "peer": s, "unit": "s", "ratio": peer/mlnb, "same_decisions": bool,
 "mlnb_peak_mb": ..., "peer_peak_mb": ...}

Cases: `100k x 20` (reference), `1M x 20 uncached` (no profile cached), `1M x 20 cached reference` (the
reference profile cached by an earlier call, as in monitoring where the baseline stays put). Times are medians of
`--repeats` runs; peak memory is measured in one extra run of each side under tracemalloc (numpy and pandas
buffers included), kept apart from the timed runs because tracing slows allocation.

    python benchmarks/drift.py [--repeats 3] [--peer-repeats 2] [--sizes 100000,1000000] [--cols 20]
"""
import os, sys
# benchmarks/ holds files named like stdlib modules (logging.py): keep this script's folder off the import path
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != os.path.dirname(os.path.abspath(__file__))]
import argparse, gc, json, statistics, time, tracemalloc, warnings

import numpy as np, pandas as pd


def make(n, cols, seed, shift=()):
    "n rows of `cols` numeric columns (floats, and a few int columns); `shift` moves some columns."
    rng = np.random.default_rng(seed)
    data = {}
    for i in range(cols):
        name = f"x{i}"
        if i % 5 == 4: data[name] = rng.integers(0, 1000, n)  # integer columns with many values: numerical
        else: data[name] = rng.normal(0, 1, n)
        if name in shift: data[name] = data[name] + (0.5 if i % 5 != 4 else 150)
    return pd.DataFrame(data)


def timed(fn, repeats):
    ts, out = [], None
    for _ in range(repeats):
        gc.collect()
        t = time.perf_counter(); out = fn(); ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def peak_mb(fn):
    gc.collect()
    tracemalloc.start()
    try: fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return round(peak / 2**20, 1)


def same(a, b) -> bool:
    "Same test, same decision on every column, and the same share."
    ta, tb = a.table.set_index('column'), b.table.set_index('column')
    if set(ta.index) != set(tb.index): return False
    tb = tb.loc[ta.index]
    return bool((ta.test == tb.test).all() and (ta.drifted == tb.drifted).all() and abs(a.share - b.evidently_share) < 1e-12)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--repeats', type=int, default=3, help="timed runs of mlnb per case")
    ap.add_argument('--peer-repeats', type=int, default=2, help="timed runs of Evidently per size")
    ap.add_argument('--sizes', default='100000,1000000', help="row counts: the first is the reference case, the second the big one")
    ap.add_argument('--cols', type=int, default=20)
    ap.add_argument('--no-memory', action='store_true', help="skip the tracemalloc runs")
    a = ap.parse_args(argv)
    warnings.filterwarnings('ignore')
    from mlnb.monitor.datadrift import drift, evidently_drift
    from mlnb.monitor.profiles import profile_cache

    sizes = [int(s) for s in a.sizes.split(',')]
    shift = ['x1', 'x4', 'x7']  # 3 of 20 columns drift
    for k, n in enumerate(sizes):
        ref, cur = make(n, a.cols, 0), make(n, a.cols, 1, shift)
        label = f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"
        peer_t, ev = timed(lambda: evidently_drift(ref, cur), a.peer_repeats)
        peer_mem = None if a.no_memory else peak_mb(lambda: evidently_drift(ref, cur))

        def uncached():
            profile_cache.clear()
            return drift(ref, cur)
        cases = [(f"{label} x {a.cols}" if k == 0 else f"{label} x {a.cols} uncached", uncached)]
        if k > 0: cases.append((f"{label} x {a.cols} cached reference", lambda: drift(ref, cur)))
        for case, fn in cases:
            if 'cached reference' in case: profile_cache.clear(); drift(ref, cur)  # the baseline profile, made once
            t, res = timed(fn, a.repeats)
            mem = None if a.no_memory else peak_mb(fn)
            line = dict(bench="drift", case=case, mlnb=round(t, 4), peer=round(peer_t, 4), unit="s",
                        ratio=round(peer_t / t, 2), same_decisions=same(res, ev), drifted=res.drifted,
                        mlnb_peak_mb=mem, peer_peak_mb=peer_mem)
            print(json.dumps(line), flush=True)
        del ref, cur, ev
        profile_cache.clear(); gc.collect()


if __name__ == '__main__':
    main()
