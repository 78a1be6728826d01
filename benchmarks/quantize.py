"""Batch scoring with int8 dynamic quantization: `mlnb predict MODEL INPUT --out OUT --quantize int8` (mlnb) vs the
same command in fp32 (peer), same registered torch MLP, same Parquet input, same chunking, in one process.

Each repetition is a whole `predict_file` job (model load, reading, scoring in chunks, parts, the output written);
the two sides alternate A/B/B/A so machine load hits both alike, and the ratio reported is the median of the paired
ratios (int8 rows/s over the fp32 rows/s of the same pair). One torch thread on both sides (shared small CPUs).
`metric_fp32`/`metric_int8` are the accuracy of each on a labelled holdout, from `mlnb.quantize_report`.

Prints one JSON line: {"bench": "quantize", "case": "int8 vs fp32 batch scoring", "mlnb": rows_s, "peer": rows_s,
"unit": "rows/s", "ratio": ..., "metric_fp32": ..., "metric_int8": ...}. The issue asks that the speed-up and the
metric change be reported; a speed-up above 1 with an accuracy change within about a point is what int8 should give.
"""
import os, sys
_here = os.path.dirname(os.path.abspath(__file__))  # benchmarks/logging.py would shadow the stdlib module
sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') != _here]
sys.path.insert(0, os.path.dirname(_here))
import json, statistics, tempfile, warnings
from pathlib import Path
warnings.filterwarnings('ignore')

D, H, C, N_TRAIN, N_SCORE, N_HOLD, CHUNK = 256, 1024, 10, 8192, 32768, 4096, 8192

def data(n, seed):
    from sklearn.datasets import make_classification
    X, y = make_classification(n_samples=n, n_features=D, n_informative=64, n_redundant=32, n_classes=C,
                               n_clusters_per_class=1, class_sep=2.0, random_state=0, shuffle=True)
    import numpy as np
    rng = np.random.default_rng(seed)
    idx = rng.permutation(n)
    return X[idx].astype('float32'), y[idx]

def trained_mlp(X, y):
    import torch
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(D, H), torch.nn.ReLU(), torch.nn.Linear(H, H), torch.nn.ReLU(), torch.nn.Linear(H, C))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    for epoch in range(2):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 256):
            b = perm[i:i + 256]
            opt.zero_grad(); torch.nn.functional.cross_entropy(net(xt[b]), yt[b]).backward(); opt.step()
    return net.eval()

def main(repeats=3):
    import mlflow, numpy as np, pandas as pd, torch
    from mlflow.models import infer_signature
    from mlnb.project import init
    from mlnb.serving.registry import register, promote
    from mlnb.serving.scoring import predict_file, quantize_report
    torch.set_num_threads(1)
    prj = init(Path(tempfile.mkdtemp())/'bench')
    mlflow.set_tracking_uri(prj.tracking_uri)
    X, y = data(N_TRAIN + N_SCORE + N_HOLD, 1)
    Xtr, ytr = X[:N_TRAIN], y[:N_TRAIN]
    Xs, Xh, yh = X[N_TRAIN:N_TRAIN + N_SCORE], X[N_TRAIN + N_SCORE:], y[N_TRAIN + N_SCORE:]
    net = trained_mlp(Xtr, ytr)
    with torch.no_grad(): out = net(torch.from_numpy(Xh[:16])).numpy()
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(net, name='model', signature=infer_signature(Xh[:16], out), pip_requirements=['torch'],
                                        serialization_format='pickle')
    register(info, 'mlp', project=prj); promote('mlp', 1, gate=False, project=prj)
    cols = [f"f{i}" for i in range(D)]
    src = prj.root/'score.parquet'; pd.DataFrame(Xs, columns=cols).to_parquet(src)
    hold = pd.DataFrame(Xh, columns=cols).assign(label=yh)

    def job(q):
        r = predict_file('mlp@champion', src, prj.root/f"out-{q or 'fp32'}.parquet", chunk_size=CHUNK, quantize=q, project=prj)
        assert r.rows == N_SCORE and r.resumed == 0
        return r.rows_per_s
    job(None); job('int8')  # warm up (imports, first loads)
    fp, q8, ratios = [], [], []
    for i in range(repeats):
        if i % 2 == 0: a = job(None); b = job('int8')
        else: b = job('int8'); a = job(None)
        fp.append(a); q8.append(b); ratios.append(b / a)
    a8 = pd.read_parquet(prj.root/'out-int8.parquet').iloc[:, 1:].to_numpy(); a32 = pd.read_parquet(prj.root/'out-fp32.parquet').iloc[:, 1:].to_numpy()
    rep = quantize_report('mlp@champion', hold, 'label', metric='accuracy', repeats=3, min_seconds=0.3, project=prj)
    print(json.dumps({"bench": "quantize", "case": "int8 vs fp32 batch scoring", "mlnb": round(statistics.median(q8), 1),
                      "peer": round(statistics.median(fp), 1), "unit": "rows/s", "ratio": round(statistics.median(ratios), 3),
                      "metric_fp32": round(rep.fp32_metric, 4), "metric_int8": round(rep.int8_metric, 4), "metric": rep.metric,
                      "label_agreement": round(float((a8.argmax(1) == a32.argmax(1)).mean()), 4),
                      "report_speedup": round(rep.speedup, 3), "rows": N_SCORE, "repeats": repeats, "torch_threads": 1}))

if __name__ == "__main__":
    main(int(os.environ.get('REPEATS', 3)))
