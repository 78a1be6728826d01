"""`mlnb predict` against a real MLflow registry in a temp project: a scored file equals the model's per-row
predictions; a job killed with SIGKILL mid-way resumes from its finished chunks and writes what an uninterrupted run
writes; int8 predictions of an MLP stay close to fp32; bad input is one line with a hint."""
import json, os, signal, subprocess, sys, time, warnings
from pathlib import Path
import pytest

warnings.filterwarnings('ignore')
CLI = [sys.executable, '-m', 'mlnb.cli']


ROOT = Path(__file__).resolve().parents[1]


def _env(**kw):
    "The environment of a `mlnb` subprocess: this checkout's `mlnb` first on the path, no inherited project."
    e = {**os.environ, 'DVC_NO_ANALYTICS': '1', **kw}
    e['PYTHONPATH'] = os.pathsep.join([str(ROOT)] + ([e['PYTHONPATH']] if e.get('PYTHONPATH') else []))
    e.pop('MLNB_PROJECT', None)
    return e


def cli(prj, *args, **env):
    return subprocess.run([*CLI, *map(str, args)], cwd=prj.root, env=_env(**env), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    "A project with `cancer` (scikit-learn, named columns, champion) and `digits` (a torch MLP on the digits, champion)."
    import mlflow, numpy as np, pandas as pd, torch
    from mlflow.models import infer_signature
    from sklearn.datasets import load_breast_cancer, load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from mlnb.project import init
    from mlnb.serving.registry import register, promote
    prj = init(tmp_path_factory.mktemp('score')/'p')
    mlflow.set_tracking_uri(prj.tracking_uri)
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X = X.iloc[:, :4]; X.columns = ['radius', 'texture', 'perimeter', 'area']
    clf = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(clf, name='model', signature=infer_signature(X, clf.predict(X)), pip_requirements=['scikit-learn'])
    register(info, 'cancer', project=prj); promote('cancer', 1, gate=False, project=prj)
    X.assign(id=[f"r{i}" for i in range(len(X))]).to_csv(prj.root/'cancer.csv', index=False)

    D, t = load_digits(return_X_y=True)
    D = (D / 16).astype('float32')
    Dtr, Dte, ttr, tte = train_test_split(D, t, test_size=0.3, random_state=0)
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(mlp.parameters(), 1e-2)
    xt, yt = torch.from_numpy(Dtr), torch.from_numpy(ttr)
    for _ in range(150):
        opt.zero_grad(); torch.nn.functional.cross_entropy(mlp(xt), yt).backward(); opt.step()
    mlp.eval()
    with torch.no_grad(): logits = mlp(torch.from_numpy(Dte)).numpy()
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(mlp, name='model', signature=infer_signature(Dte, logits), pip_requirements=['torch'],
                                        serialization_format='pickle')
    register(info, 'digits', project=prj); promote('digits', 1, gate=False, project=prj)
    with mlflow.start_run():  # the same MLP as torch.export's pt2, how mlnb.train logs torch models
        info = mlflow.pytorch.log_model(mlp, name='model', signature=infer_signature(Dte, logits), pip_requirements=['torch'],
                                        serialization_format='pt2', input_example=Dte[:2])
    register(info, 'digits-pt2', project=prj); promote('digits-pt2', 1, gate=False, project=prj)
    cols = [f"px{i}" for i in range(64)]
    pd.DataFrame(Dte, columns=cols).to_parquet(prj.root/'digits.parquet')
    pd.DataFrame(Dte, columns=cols).assign(label=tte).to_csv(prj.root/'digits_holdout.csv', index=False)
    return dict(prj=prj, X=X, clf=clf, D=Dte, t=tte, logits=logits)


def test_predict_equals_per_row_predictions(env):
    import pandas as pd
    prj, X, clf = env['prj'], env['X'], env['clf']
    r = cli(prj, 'predict', 'cancer@champion', 'cancer.csv', '--out', 'scores.csv', '--chunk-size', '100', '--id-column', 'id')
    assert r.returncode == 0, r.stderr
    assert 'scored 569 rows with cancer v1' in r.stdout and '6 chunks' in r.stdout
    assert '[mlnb] predict.start' in r.stderr and '[mlnb] predict.done' in r.stderr  # progress events on stderr
    got = pd.read_csv(prj.root/'scores.csv')
    assert list(got.columns) == ['id', 'prediction', 'prediction_id'] and got.id.tolist() == [f"r{i}" for i in range(len(X))]
    from mlnb.govern.records import prediction  # each batch decision is recorded: found by its id, input fingerprinted
    rec = prediction(got.prediction_id[7], project=prj)
    assert (rec.model, rec.version, rec.output) == ('cancer', 1, int(got.prediction[7])) and rec.input_hash.startswith('sha256:')
    assert rec.input == pytest.approx(X.iloc[7].to_dict())
    per_row = [int(clf.predict(X.iloc[[i]])[0]) for i in range(len(X))]
    assert got.prediction.tolist() == per_row
    assert not (prj.root/'scores.csv.parts').exists()


def test_tensor_model_and_parquet_output(env):
    import numpy as np, pandas as pd
    prj = env['prj']
    r = cli(prj, 'predict', 'digits', 'digits.parquet', '--out', 'digits_scores.parquet', '--chunk-size', '128')
    assert r.returncode == 0, r.stderr
    got = pd.read_parquet(prj.root/'digits_scores.parquet')
    assert list(got.columns) == ['row'] + [f"prediction_{i}" for i in range(10)] + ['prediction_id']
    np.testing.assert_allclose(got.iloc[:, 1:11].to_numpy(), env['logits'], rtol=1e-5, atol=1e-5)


def test_resume_after_kill(env, monkeypatch):
    "Kill -9 a job after some chunks are saved; the re-run skips exactly those and writes what an uninterrupted run writes."
    import pandas as pd
    from mlnb.core import events
    from mlnb.serving.scoring import predict_file
    prj = env['prj']
    out = prj.root/'killed.parquet'; parts = Path(f"{out}.parts"); manifest = parts/'manifest.jsonl'
    p = subprocess.Popen([*CLI, 'predict', 'cancer@champion', 'cancer.csv', '--out', out.name, '--chunk-size', '20', '--id-column', 'id'],
                         cwd=prj.root, env=_env(MLNB_PREDICT_CHUNK_DELAY_S='0.4'), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        t0 = time.time()
        while not (manifest.exists() and len(manifest.read_text().splitlines()) >= 3):
            assert p.poll() is None, p.communicate()[1][-2000:]
            assert time.time() - t0 < 180, 'no chunk finished in time'
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGKILL); p.wait(30)
    finally:
        if p.poll() is None: p.kill(); p.wait()
    assert p.returncode == -signal.SIGKILL
    assert not out.exists()
    done = [json.loads(l) for l in manifest.read_text().splitlines() if l.strip()]
    done_chunks = {e['chunk'] for e in done}
    assert len(done_chunks) >= 3 and len(done_chunks) < 29  # 569 rows in chunks of 20: killed mid-way

    seen = []
    monkeypatch.chdir(prj.root)
    with events.listening('predict.chunk', lambda ev: seen.append((ev.data['chunk'], ev.data['resumed']))):
        r = predict_file('cancer@champion', 'cancer.csv', out.name, chunk_size=20, id_column='id')
    assert r.chunks == 29 and r.resumed == len(done_chunks)
    assert {c for c, res in seen if res} == done_chunks  # the saved chunks were skipped ...
    assert {c for c, res in seen if not res} == set(range(29)) - done_chunks  # ... and only the rest were scored
    assert not parts.exists()
    whole = predict_file('cancer@champion', 'cancer.csv', 'whole.parquet', chunk_size=20, id_column='id')
    assert whole.resumed == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(prj.root/'whole.parquet'))
    assert pd.read_parquet(out).prediction.tolist() == env['clf'].predict(env['X']).tolist()


def test_quantized_close_to_fp32_on_mlp(env):
    import numpy as np, pandas as pd
    prj = env['prj']
    r = cli(prj, 'predict', 'digits@champion', 'digits.parquet', '--out', 'q.parquet', '--quantize', 'int8', '--chunk-size', '200')
    assert r.returncode == 0, r.stderr
    assert '(int8)' in r.stdout
    q = pd.read_parquet(prj.root/'q.parquet').drop(columns='prediction_id').iloc[:, 1:].to_numpy()
    fp = env['logits']
    assert not np.array_equal(q, fp)  # it did run the quantized copy
    assert np.abs(q - fp).max() < 0.05 * np.abs(fp).max()
    assert (q.argmax(1) == fp.argmax(1)).mean() >= 0.98
    r = cli(prj, 'quantize-report', 'digits@champion', 'digits_holdout.csv', '--target', 'label', '--metric', 'accuracy', '--repeats', '1')
    assert r.returncode == 0, r.stderr
    assert 'digits v1 int8 vs fp32 on 540 holdout rows' in r.stdout and 'accuracy' in r.stdout, r.stdout
    from mlnb.serving.scoring import quantize_report
    rep = quantize_report('digits', (env['D'], env['t']), metric='accuracy', repeats=1, min_seconds=0.05, project=prj)
    assert rep.fp32_metric == pytest.approx((fp.argmax(1) == env['t']).mean())
    assert rep.fp32_metric > 0.9 and abs(rep.metric_change) <= 0.02
    assert rep.fp32_rows_s > 0 and rep.int8_rows_s > 0


def test_pt2_model_quantizes_like_the_module(env):
    "A pt2 (torch.export) model has no nn.Linear left; its graph's linear calls quantize to the same int8 outputs."
    import numpy as np, pandas as pd
    from mlnb.serving.scoring import predict_file
    prj = env['prj']
    a = predict_file('digits-pt2', prj.root/'digits.parquet', prj.root/'pt2-int8.parquet', chunk_size=200, quantize='int8', project=prj)
    b = predict_file('digits', prj.root/'digits.parquet', prj.root/'pickle-int8.parquet', chunk_size=200, quantize='int8', project=prj)
    q2, q1 = (pd.read_parquet(prj.root/f).drop(columns='prediction_id').iloc[:, 1:].to_numpy() for f in ('pt2-int8.parquet', 'pickle-int8.parquet'))
    assert a.rows == b.rows == len(env['D'])
    np.testing.assert_allclose(q2, q1, rtol=1e-5, atol=1e-5)
    assert not np.allclose(q2, env['logits'], rtol=1e-6, atol=1e-6)  # quantized, not the fp32 graph


@pytest.mark.parametrize('args,code,msg', [
    (['cancer@nope', 'cancer.csv', '--out', 'o.csv'], 1, "model 'cancer' has no alias @nope"),
    (['cancr', 'cancer.csv', '--out', 'o.csv'], 1, "no registered model 'cancr'"),
    (['cancer', 'missing.csv', '--out', 'o.csv'], 1, 'no such file: missing.csv'),
    (['cancer', 'garbage.parquet', '--out', 'o.csv'], 1, 'cannot read garbage.parquet'),
    (['cancer', 'digits.parquet', '--out', 'o.csv'], 1, 'lacks the column(s) radius, texture, perimeter, area'),
    (['cancer', 'cancer.csv', '--out', 'nodir/o.csv'], 1, 'the output folder nodir does not exist'),
    (['cancer', 'cancer.csv', '--out', 'o.csv', '--quantize', 'int8'], 1, '--quantize int8 needs a torch model, and this one is sklearn'),
    (['cancer', 'cancer.csv', '--out', 'o.txt'], 2, 'cannot tell the output format'),
    (['cancer', 'cancer.csv'], 2, 'the following arguments are required: --out'),
])
def test_bad_input_is_one_line(env, args, code, msg):
    prj = env['prj']
    (prj.root/'garbage.parquet').write_bytes(b'\x00not a parquet file')
    r = cli(prj, 'predict', *args)
    assert r.returncode == code, (r.returncode, r.stderr)
    err = [l for l in r.stderr.splitlines() if not l.startswith('[mlnb]')]
    assert len(err) == 1 and err[0].startswith('mlnb: error:') and msg in err[0] and 'hint:' in err[0], r.stderr
    assert not (prj.root/'o.csv').exists()


def test_magic_scores_a_dataframe(env, ip, monkeypatch):
    import pandas as pd
    prj, X = env['prj'], env['X']
    monkeypatch.chdir(prj.root)
    ip.user_ns['df'] = X
    r = ip.run_line_magic('mlnb', 'predict cancer df --out magic.csv --chunk-size 250')
    assert r.rows == len(X) and r.chunks == 3
    assert pd.read_csv(prj.root/'magic.csv').prediction.tolist() == env['clf'].predict(X).tolist()


def test_transformers_pipeline_quantized(env, tmp_path):
    "A text pipeline (one unnamed string column) scores from a CSV; int8 stays close to fp32, and fp32 equals the pipeline."
    pytest.importorskip('transformers'); pytest.importorskip('tokenizers')
    import mlflow, pandas as pd, torch
    from tokenizers import Tokenizer, models, trainers, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast, pipeline
    from mlnb.serving.registry import register, promote
    from mlnb.serving.scoring import predict_file
    prj = env['prj']
    torch.manual_seed(0)
    texts = ['a good movie', 'a bad film', 'great acting here', 'terrible plot and bad acting']
    tok = Tokenizer(models.WordLevel(unk_token='[UNK]')); tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=['[UNK]', '[PAD]', '[CLS]', '[SEP]', '[MASK]']))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token='[UNK]', pad_token='[PAD]', cls_token='[CLS]', sep_token='[SEP]', mask_token='[MASK]')
    cfg = BertConfig(vocab_size=fast.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_labels=2)
    pipe = pipeline('text-classification', model=BertForSequenceClassification(cfg).eval(), tokenizer=fast, device='cpu')
    mlflow.set_tracking_uri(prj.tracking_uri)
    with mlflow.start_run():
        info = mlflow.transformers.log_model(pipe, name='model', task='text-classification', pip_requirements=['transformers', 'torch'])
    register(info, 'sentiment', project=prj); promote('sentiment', 1, gate=False, project=prj)
    pd.DataFrame({'id': range(12), 'text': texts * 3}).to_csv(tmp_path/'texts.csv', index=False)
    a = predict_file('sentiment', tmp_path/'texts.csv', tmp_path/'fp32.csv', chunk_size=5, id_column='id', project=prj)
    b = predict_file('sentiment', tmp_path/'texts.csv', tmp_path/'int8.csv', chunk_size=5, id_column='id', quantize='int8', project=prj)
    assert (a.rows, b.rows, b.quantize) == (12, 12, 'int8')
    fp, q = pd.read_csv(tmp_path/'fp32.csv'), pd.read_csv(tmp_path/'int8.csv')
    assert list(fp.columns) == ['id', 'prediction_label', 'prediction_score', 'prediction_id']
    want = pipe(texts * 3)
    assert fp.prediction_label.tolist() == [w['label'] for w in want]
    assert (fp.prediction_score - pd.Series([w['score'] for w in want])).abs().max() < 1e-5
    assert not fp.prediction_score.equals(q.prediction_score)  # the quantized copy ran
    assert (fp.prediction_score - q.prediction_score).abs().max() < 0.01
