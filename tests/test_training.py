"""`mlnb.train` end to end: digits MLP, a tiny transformer with a locally trained tokenizer, kill -9 and resume,
DDP on 2 CPU processes against 1, the `%mlnb train` magic, a launched script, text progress and bad inputs."""
import io, json, math, os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import pytest

torch = pytest.importorskip('torch')
pytest.importorskip('accelerate')
from mlnb.training.checkpoints import CheckpointMismatch  # noqa: E402
from mlnb.training.data import TrainError  # noqa: E402
from mlnb.training.fit import stop  # noqa: E402
from mlnb.training.loop import train  # noqa: E402
from mlnb.training.metrics import evaluate  # noqa: E402

ENV = {**os.environ, 'DVC_NO_ANALYTICS': '1', 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}

@pytest.fixture(autouse=True)
def _one_thread():
    "Shared small CPUs: intra-op threads only contend there."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

@pytest.fixture
def prj(tmp_path):
    from mlnb.project import init
    return init(tmp_path/'p')

def digits():
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y

def mlp(hidden=128, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))

def history(prj, run_id, key='loss'):
    from mlflow import MlflowClient
    return [(m.step, m.value) for m in sorted(MlflowClient(prj.tracking_uri).get_metric_history(run_id, key), key=lambda m: m.step)]

def test_digits_mlp_reaches_095_and_logs_a_loadable_model(prj):
    X, y = digits()
    t = time.perf_counter()
    r = train(mlp(), (X, y), val=0.2, epochs=8, batch_size=64, lr=3e-3, project=prj)
    print(f"digits MLP: {time.perf_counter() - t:.1f}s, {r.samples_per_s:,.0f} samples/s")
    assert r.metrics['val_accuracy'] >= 0.95
    assert [s for s, _ in history(prj, r.run_id)] == list(range(1, r.steps + 1))
    from mlflow import MlflowClient
    run = MlflowClient(prj.tracking_uri).get_run(r.run_id)
    assert {'val_accuracy', 'lr', 'samples_per_s', 'train_loss', 'loss'} <= set(run.data.metrics)
    assert run.data.params['batch_size'] == '64' and run.info.status == 'FINISHED'
    assert len(history(prj, r.run_id, 'val_accuracy')) == 8
    import mlflow.pyfunc
    mlflow.set_tracking_uri(prj.tracking_uri)
    pred = mlflow.pyfunc.load_model(r.model_uri).predict(X[:4].astype('float32'))
    assert pred.shape == (4, 10)
    assert '<table' in r._repr_html_() and 'val_accuracy' in r._repr_html_()
    assert evaluate(r.model, (X, y), ['accuracy'])['accuracy'] > 0.95

PYFUNC_TRAIN = '''
import json, sys, numpy as np, torch
torch.set_num_threads(1)
from sklearn.datasets import load_digits
from mlnb.config import Project
from mlnb.core import events
from mlnb.training.loop import train
X, y = load_digits(return_X_y=True); X = (X / 16.0).astype('float32')
class Net(torch.nn.Module):  # defined in __main__, as in a notebook: no other process can import it
    def __init__(self):
        super().__init__(); self.a, self.drop, self.b = torch.nn.Linear(64, 64), torch.nn.Dropout(0.5), torch.nn.Linear(64, 10)
    def forward(self, x): return self.b(self.drop(torch.relu(self.a(x))))
class Branchy(Net):  # data-dependent control flow: torch.export cannot trace it
    def forward(self, x): return super().forward(x) if float(x.sum()) > 0 else -super().forward(x)
warn, out = [], {}
events.on('train.warning', lambda ev: warn.append(ev.msg))
for cls in (Net, Branchy):
    torch.manual_seed(0)
    r = train(cls(), (X, y), epochs=2, batch_size=64, lr=3e-3, project=Project(sys.argv[1]))
    mode = r.model.training  # logging exports in eval mode, then gives the model back as it was
    with torch.no_grad(): ref = r.model.eval()(torch.from_numpy(X)).numpy()
    out[cls.__name__] = dict(uri=r.model_uri, ref=ref.tolist(), training=mode)
json.dump(dict(models=out, warnings=warn), open(sys.argv[2], 'w'))
'''

PYFUNC_LOAD = '''
import json, pathlib, sys, mlflow, mlflow.artifacts, mlflow.pyfunc, numpy as np, pandas as pd
from sklearn.datasets import load_digits
X = (load_digits(return_X_y=True)[0] / 16.0).astype('float32')
mlflow.set_tracking_uri(sys.argv[1])
out = {}
for name, uri in json.loads(sys.argv[2]).items():
    m = mlflow.pyfunc.load_model(uri)
    pt2 = any(pathlib.Path(mlflow.artifacts.download_artifacts(uri)).rglob('*.pt2'))
    out[name] = dict(fmt='pt2' if pt2 else 'pickle', one=np.asarray(m.predict(X[:1])).tolist(),
                     all=np.asarray(m.predict(X)).tolist(), df=np.asarray(m.predict(pd.DataFrame(X[:5]))).tolist())
json.dump(out, sys.stdout)
'''

def test_logged_torch_model_loads_with_pyfunc_in_another_process(prj, tmp_path):
    "What the server does: `mlflow.pyfunc.load_model` in a fresh process, a model class it cannot import, arrays and DataFrames."
    import numpy as np
    (tmp_path/'t.py').write_text(PYFUNC_TRAIN); (tmp_path/'l.py').write_text(PYFUNC_LOAD)
    r = subprocess.run([sys.executable, str(tmp_path/'t.py'), str(prj.root), str(tmp_path/'m.json')], env=ENV, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads((tmp_path/'m.json').read_text())
    ms = d['models']
    assert all(m['uri'] for m in ms.values()) and all(m['training'] for m in ms.values())
    assert len(d['warnings']) == 1 and 'cannot trace Branchy' in d['warnings'][0] and 'pickled' in d['warnings'][0]
    r = subprocess.run([sys.executable, str(tmp_path/'l.py'), prj.tracking_uri, json.dumps({k: m['uri'] for k, m in ms.items()})],
                       env=ENV, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout)
    assert got['Net']['fmt'] == 'pt2' and got['Branchy']['fmt'] == 'pickle'
    for name, m in ms.items():
        ref, g = np.asarray(m['ref']), got[name]
        assert np.asarray(g['all']).shape == (1797, 10) and np.asarray(g['one']).shape == (1, 10) and np.asarray(g['df']).shape == (5, 10)
        assert np.allclose(g['all'], ref, atol=1e-4) and np.allclose(g['df'], ref[:5], atol=1e-4)  # eval mode: no dropout
        assert (ref.argmax(1) == digits()[1]).mean() > 0.8

def test_tiny_transformer_from_local_folder_trains_and_loss_falls(prj, tmp_path, tiny_bert):
    import pandas as pd
    from transformers import PreTrainedTokenizerFast
    texts, labels = tiny_bert(tmp_path/'bert')
    tok = PreTrainedTokenizerFast.from_pretrained(tmp_path/'bert')  # reloads from the local folder
    df = pd.DataFrame(dict(text=texts, label=labels))
    r = train(str(tmp_path/'bert'), df, val=0.2, epochs=3, batch_size=32, lr=1e-3, project=prj)
    losses = [v for _, v in history(prj, r.run_id)]
    assert len(losses) == r.steps == 3 * math.ceil(320 / 32)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1
    assert r.history[-1]['train_loss'] < r.history[0]['train_loss']
    assert r.metrics['val_accuracy'] > 0.8
    assert r.model_uri  # an MLflow transformers model with its tokenizer
    with pytest.raises(TrainError, match='out of range for a model with num_labels=2'):
        train(str(tmp_path/'bert'), df.assign(label=df.label + 2), project=prj)
    with pytest.raises(TrainError, match='needs its tokenizer'):
        from transformers import BertForSequenceClassification
        m = BertForSequenceClassification.from_pretrained(tmp_path/'bert'); m.name_or_path = ''
        train(m, df, project=prj)
    with pytest.raises(TrainError, match='not a local folder'):
        train(str(tmp_path/'nope'), df, project=prj)
    assert tok.pad_token == '[PAD]'

KILL_SCRIPT = '''
import json, sys, time, torch
torch.set_num_threads(1)
from sklearn.datasets import load_digits
from mlnb.config import Project
from mlnb.core import events
from mlnb.training.loop import train
X, y = load_digits(return_X_y=True)
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Dropout(0.1), torch.nn.ReLU(), torch.nn.Linear(64, 10))
slow = float(sys.argv[3])
if slow: events.on('train.step', lambda ev: time.sleep(slow))
r = train(net, (X / 16.0, y), val=0.2, epochs=3, batch_size=64, lr=3e-3, checkpoint_every=7, project=Project(sys.argv[1]), log_model=False, name='kill')
json.dump(dict(run_id=r.run_id, steps=r.steps, resumed_from=r.resumed_from, metrics=r.metrics, stopped=r.stopped), open(sys.argv[2], 'w'))
'''

def test_kill9_mid_epoch_then_rerun_resumes_into_the_same_run(prj, tmp_path):
    from mlflow import MlflowClient
    from mlnb.project import init
    script = tmp_path/'kill.py'; script.write_text(KILL_SCRIPT)
    out = tmp_path/'out.json'
    p = subprocess.Popen([sys.executable, str(script), str(prj.root), str(out), '0.1'], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckdir, deadline = prj.root/'.mlnb'/'checkpoints', time.monotonic() + 240
    def ckpt_step():
        for f in ckdir.glob('*/last.pt'):
            try: return torch.load(f, weights_only=False)['step']
            except Exception: return 0
        return 0
    while ckpt_step() < 14 and p.poll() is None and time.monotonic() < deadline: time.sleep(0.2)
    assert p.poll() is None, p.stderr.read().decode()[-2000:]
    time.sleep(0.3)  # a few steps past the checkpoint at step 14 (next at 21): mid-epoch, 23 steps per epoch
    os.kill(p.pid, signal.SIGKILL); p.wait()
    assert not out.exists()
    killed_at = ckpt_step()
    assert 14 <= killed_at < 23, killed_at
    r = subprocess.run([sys.executable, str(script), str(prj.root), str(out), '0'], env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    # an uninterrupted run of the same call, in another project
    other = init(tmp_path/'other')
    r2 = subprocess.run([sys.executable, str(script), str(other.root), str(tmp_path/'o2.json'), '0'], env=ENV, capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stderr[-3000:]
    full = json.loads((tmp_path/'o2.json').read_text())
    assert res['resumed_from'] == killed_at and res['steps'] == full['steps'] == 3 * 23
    c = MlflowClient(prj.tracking_uri)
    runs = c.search_runs([c.get_run(res['run_id']).info.experiment_id])
    assert [x.info.run_id for x in runs] == [res['run_id']] and runs[0].info.status == 'FINISHED'
    h = history(prj, res['run_id'])
    assert [s for s, _ in h] == list(range(1, full['steps'] + 1))  # one continuous history, no duplicates
    ref = history(other, full['run_id'])
    assert max(abs(a - b) for (_, a), (_, b) in zip(h, ref)) < 1e-4  # the resumed run follows the uninterrupted one
    assert abs(res['metrics']['val_loss'] - full['metrics']['val_loss']) < 1e-4
    assert [s for s, _ in history(prj, res['run_id'], 'val_loss')] == [23, 46, 69]

DDP_SCRIPT = '''
import json, sys, torch
from mlnb.config import Project
from mlnb.training.loop import train
torch.manual_seed(0)
X = torch.randn(512, 16); w = torch.randn(16, 1); y = (X @ w + 0.1 * torch.randn(512, 1))
def net():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
prj = Project(sys.argv[1])
kw = dict(val=(X[:128], y[:128]), epochs=2, batch_size=64, lr=1e-2, optimizer='sgd', project=prj, log_model=False, devices='cpu')
one = train(net(), (X[128:], y[128:]), name='one', **kw)
import os, threading
from mlnb.core import events
seen = []  # what the notebook's view would see: events of process 0, relayed into this process
with events.listening('*', lambda ev: seen.append((ev.kind, ev.data.get('step'), os.getpid(), threading.current_thread() is threading.main_thread()))):
    two = train(net(), (X[128:], y[128:]), gpus=2, name='two', **kw)
diff = max((a - b).abs().max().item() for a, b in zip(one.model.state_dict().values(), two.model.state_dict().values()))
json.dump(dict(one=one.metrics, two=two.metrics, steps=[one.steps, two.steps], diff=diff, runs=[one.run_id, two.run_id], device=two.device,
               seen=seen, pid=os.getpid()), open(sys.argv[2], 'w'))
'''

def test_ddp_two_cpu_processes_match_one_at_the_same_global_batch(prj, tmp_path):
    script = tmp_path/'ddp.py'; script.write_text(DDP_SCRIPT)
    r = subprocess.run([sys.executable, str(script), str(prj.root), str(tmp_path/'d.json')], env=ENV, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    d = json.loads((tmp_path/'d.json').read_text())
    assert d['steps'] == [12, 12] and d['device'] == 'cpu×2'
    assert abs(d['one']['val_loss'] - d['two']['val_loss']) < 1e-4 * max(1.0, d['one']['val_loss'])
    assert d['diff'] < 1e-4
    assert all(d['runs']) and d['runs'][0] != d['runs'][1]
    assert len(history(prj, d['runs'][1])) == 12
    # the DDP processes' progress reaches the calling process (a notebook's live view): relayed by a thread, in order
    kinds = [k for k, *_ in d['seen']]
    assert all(pid == d['pid'] for *_, pid, _ in d['seen'])
    assert kinds[0] == 'track.start' and 'train.start' in kinds and kinds.count('train.epoch') == 2 and kinds[-1] == 'train.end'
    assert kinds.count('train.end') == 1 and kinds.count('train.checkpoint') == 1
    steps = [s for k, s, *_ in d['seen'] if k == 'train.step']
    assert steps and steps == sorted(steps) and steps[-1] == 12
    assert not all(main for *_, main in d['seen'][:-1])  # relayed from another thread; `train.end` from the caller's

def test_magic_resolves_names_and_returns_the_result(ip, prj, monkeypatch, capsys):
    import pandas as pd
    monkeypatch.chdir(prj.root)
    ip.run_line_magic('config', 'MlnbMagics.widgets = False')
    X, y = digits()
    ip.user_ns.update(net=mlp(), df=pd.DataFrame(X).rename(columns=str).assign(digit=y))
    try: ip.run_cell('res = %mlnb train net --data df --target digit --val 0.2 --epochs 2 --batch-size 64 --lr 0.003 --metrics accuracy,f1')
    finally: ip.run_line_magic('config', 'MlnbMagics.widgets = True')
    res = ip.user_ns['res']
    assert res.steps == 2 * math.ceil(len(X) * 0.8 / 64) and res.metrics['val_accuracy'] > 0.8 and 'val_f1' in res.metrics
    out = capsys.readouterr().out
    assert '[mlnb] train.start:' in out and '[mlnb] train.epoch: epoch 2/2' in out and '[mlnb] train.end: done' in out
    from IPython.core.error import UsageError
    with pytest.raises(UsageError, match='no model named `nett`'): ip.run_line_magic('mlnb', 'train nett --data df')
    with pytest.raises(UsageError, match='train needs --data'): ip.run_line_magic('mlnb', 'train net')
    with pytest.raises(TrainError, match="has no column 'label'"): ip.run_line_magic('mlnb', 'train net --data df --target label')

def test_headless_text_progress(prj):
    from mlnb.core import TextRenderer, events
    buf = io.StringIO()
    X, y = digits()
    with events.listening('train.*', TextRenderer(buf)):
        train(mlp(), (X[:256], y[:256]), epochs=2, batch_size=64, project=prj, log_model=False)
    lines = buf.getvalue().splitlines()
    assert any(l.startswith('[mlnb] train.step: step 8/8 epoch 2 loss') for l in lines)
    assert sum('train.epoch' in l for l in lines) == 2 and any('train.checkpoint' in l for l in lines)

SCRIPT = '''
import os, sys
from accelerate import Accelerator
acc = Accelerator(cpu=True)
open(os.path.join(sys.argv[1], f"rank{acc.process_index}-of-{acc.num_processes}"), "w").write(str(acc.distributed_type))
'''

def test_cli_launches_a_script_on_two_processes(mlnb_cli, tmp_path):
    (tmp_path/'s.py').write_text(SCRIPT)
    r = mlnb_cli('train', tmp_path/'s.py', '--gpus', '2', '--args', str(tmp_path), env={'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.glob('rank*')) == ['rank0-of-2', 'rank1-of-2']
    r = mlnb_cli('train', tmp_path/'missing.py')
    assert r.returncode == 1 and 'no training script' in r.stderr + r.stdout
    r = mlnb_cli('train', 'net', '--data', 'df', cwd=tmp_path)
    assert r.returncode == 2 and 'only a notebook can pass' in r.stderr + r.stdout

def test_bad_inputs_fail_before_the_first_step(prj, tmp_path):
    import pandas as pd
    X, y = digits()
    seen = []
    from mlnb.core import events
    with events.listening('train.step', seen.append):
        with pytest.raises(TrainError, match='training data is empty'): train(mlp(), (X[:0], y[:0]), project=prj)
        with pytest.raises(TrainError, match='validation data is empty'): train(mlp(), (X, y), val=(X[:0], y[:0]), project=prj)
        with pytest.raises(TrainError, match=r'does not take this data \(a batch of inputs \(32, 10\)\)'): train(mlp(), (X[:, :10], y), project=prj)
        with pytest.raises(TrainError, match='float32 but the loss is cross-entropy'): train(mlp(), (X, y.astype('float32')), loss='cross_entropy', project=prj)
        with pytest.raises(TrainError, match='labels have shape'): train(mlp(), (X, y.reshape(-1, 1)), project=prj)
        with pytest.raises(TrainError, match='int64 but the loss is mse'): train(mlp(), (X, y), loss='mse', project=prj)
        with pytest.raises(TrainError, match='no `target`'): train(mlp(), pd.DataFrame(X).assign(y=y), project=prj)
        with pytest.raises(TrainError, match='differ in length'): train(mlp(), (X, y[:10]), project=prj)
        with pytest.raises(TrainError, match='mlnb cannot train a object'): train(object(), (X, y), project=prj)
        if not torch.cuda.is_available():
            with pytest.raises(TrainError, match="devices='cuda' but no CUDA device"): train(mlp(), (X, y), devices='cuda', project=prj)
        with pytest.raises(TrainError, match='fp16.*needs a GPU'): train(mlp(), (X, y), precision='fp16', devices='cpu', project=prj)
        with pytest.raises(TrainError, match='epochs must be a positive integer'): train(mlp(), (X, y), epochs=0, project=prj)
        # a checkpoint from a different model, given explicitly
        r = train(mlp(), (X, y), epochs=1, batch_size=64, callbacks=[lambda ev: ev.kind == 'train.step' and ev.data['step'] == 3 and stop()],
                  project=prj, log_model=False)
        assert r.stopped and Path(r.checkpoint).exists()
        seen.clear()
        with pytest.raises(CheckpointMismatch, match=r"'0.bias' is \[128\] there and \[16\] here \(3 tensors differ\)"):
            train(mlp(hidden=16), (X, y), resume=r.checkpoint, project=prj)
        with pytest.raises(TrainError, match='no checkpoint at'): train(mlp(), (X, y), resume=tmp_path/'none.pt', project=prj)
    assert seen == []

def test_magic_live_view_follows_the_run_and_shows_the_result(ip, prj, monkeypatch):
    import mlnb.widgets.train as W
    monkeypatch.chdir(prj.root)
    made, orig = [], W.make_view
    monkeypatch.setattr(W, 'make_view', lambda args, ctx: made.append(orig(args, ctx)) or made[-1])
    X, y = digits()
    ip.user_ns.update(net=mlp(), X=X, y=y, data=(X, y))
    ip.run_cell('res = %mlnb train net --data data --val 0.2 --epochs 2 --batch-size 64')
    res, v = ip.user_ns['res'], made[0]
    assert v.step == v.total == res.steps and len(v.epoch_rows) == 2 and v.losses
    assert 'trained Sequential' in v.html.value and '<svg' in v.html.value and v.button.disabled

def test_interrupt_stops_cleanly_and_the_same_call_resumes(prj, tmp_path):
    "Ctrl-C (a kernel interrupt in Jupyter) stops at the next step with a checkpoint; the run is KILLED, then resumed."
    from mlflow import MlflowClient
    script = tmp_path/'kill.py'; script.write_text(KILL_SCRIPT)
    out = tmp_path/'out.json'
    p = subprocess.Popen([sys.executable, str(script), str(prj.root), str(out), '0.05'], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not list((prj.root/'.mlnb'/'checkpoints').glob('*/last.pt')) and p.poll() is None and time.monotonic() < deadline: time.sleep(0.2)
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=120) == 0, p.stderr.read().decode()[-2000:]
    first = json.loads(out.read_text())
    assert first['stopped'] and 7 <= first['steps'] < 69
    ck = torch.load(next((prj.root/'.mlnb'/'checkpoints').glob('*/last.pt')), weights_only=False)
    assert ck['step'] == first['steps']
    assert MlflowClient(prj.tracking_uri).get_run(first['run_id']).info.status == 'KILLED'
    r = subprocess.run([sys.executable, str(script), str(prj.root), str(out), '0'], env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res['run_id'] == first['run_id'] and res['resumed_from'] == first['steps'] and res['steps'] == 69 and not res['stopped']
    assert [s for s, _ in history(prj, res['run_id'])] == list(range(1, 70))

KERNEL_CELL = '''
import time, torch
torch.set_num_threads(1)
from IPython.display import display
from sklearn.datasets import load_digits
from mlnb.config import Project
from mlnb.core import events
from mlnb.training.loop import train
from mlnb.widgets.train import TrainView
X, y = load_digits(return_X_y=True)
v = TrainView('t'); display(v.widget)
print('BUTTON', v.button.model_id, flush=True)
events.on('train.step', lambda ev: time.sleep(0.02) or (ev.data['step'] == 5 and print('TRAINING', flush=True)))
torch.manual_seed(0)
with events.listening('*', v.on_event):
    r = train(torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)), (X, y), epochs=20, batch_size=32,
              project=Project(%r), log_model=False)
print('RESULT', r.stopped, r.steps, v.stopping, flush=True)
'''

def test_stop_button_click_reaches_a_real_kernel_while_the_cell_trains(prj):
    "A `comm_msg` click, sent as a browser sends it, stops the training in a running cell; a cell queued meanwhile runs after it."
    import queue
    from jupyter_client.manager import start_new_kernel
    import mlnb
    root = str(Path(mlnb.__file__).parent.parent)
    env = {**ENV, 'PYTHONPATH': root + os.pathsep + os.environ.get('PYTHONPATH', '')}
    km, kc = start_new_kernel(kernel_name='python3', env=env, cwd=str(prj.root))
    try:
        first = kc.execute(KERNEL_CELL % str(prj.root))
        out, deadline, bid = [], time.monotonic() + 240, None
        def read(until):
            while time.monotonic() < deadline:
                try: m = kc.get_iopub_msg(timeout=1)
                except queue.Empty: continue
                if m['msg_type'] == 'stream': out.append(m['content']['text'])
                if m['msg_type'] == 'error': raise AssertionError('\n'.join(m['content']['traceback'])[-3000:])
                if until(''.join(out)): return ''.join(out)
            raise AssertionError(f"timed out; kernel output: {''.join(out)[-2000:]}")
        bid = read(lambda t: 'BUTTON' in t).split('BUTTON ')[1].split()[0]
        second = kc.execute("print('AFTER', r.stopped, flush=True)")  # waits behind the running cell
        read(lambda t: 'TRAINING' in t)  # step 5 is done: the cell is in the training loop
        kc.shell_channel.send(kc.session.msg('comm_msg', {'comm_id': bid, 'data': {'method': 'custom', 'content': {'event': 'click'}}}))
        text = read(lambda t: 'AFTER' in t)
        res = text.split('RESULT ')[1].split()
        assert res[0] == 'True' and 5 <= int(res[1]) < 20 * 57 and res[2] == 'True', text[-1000:]
        assert text.index('RESULT') < text.index('AFTER True')  # the queued cell ran after the stopped one, seeing its result
        replies = {}
        while len(replies) < 2 and time.monotonic() < deadline:
            try: m = kc.get_shell_msg(timeout=5)
            except queue.Empty: continue
            if m['msg_type'] == 'execute_reply': replies[m['parent_header']['msg_id']] = m['content']['status']
        assert replies == {first: 'ok', second: 'ok'}
    finally:
        kc.stop_channels(); km.shutdown_kernel(now=True)

# scikit-learn (issue 19, points 4 and 7): the run's params are what the user set; metrics say their split

def cancer(n=200):
    "A small, two-class table: the first `n` rows of scikit-learn's breast cancer data, label `y`."
    import pandas as pd
    from sklearn.datasets import load_breast_cancer
    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)  # scaled: a logistic regression converges in a few iterations
    return pd.DataFrame(X[:n], columns=[f"f{i}" for i in range(X.shape[1])]).assign(y=y[:n])

def test_sklearn_params_are_what_the_user_set_and_the_full_config_is_an_artifact(prj, tmp_path):
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    model = Pipeline([('scale', StandardScaler()), ('clf', LogisticRegression(C=0.5, max_iter=300, verbose=0))])  # verbose=0 is the default
    res = train(model, cancer(), target='y', project=prj, log_model=False)
    c = MlflowClient(prj.tracking_uri)
    ps = c.get_run(res.run_id).data.params
    assert ps['model'] == 'Pipeline(scale=StandardScaler, clf=LogisticRegression)'
    assert {k: ps[k] for k in ('clf__C', 'clf__max_iter')} == {'clf__C': '0.5', 'clf__max_iter': '300'}
    split = {'n_train', 'n_val', 'val_split', 'val_seed', 'val_stratified'}
    assert set(ps) == {'model', 'clf__C', 'clf__max_iter'} | split, sorted(ps)  # no memory, verbose, tol, solver... (defaults)
    cfg = json.loads(Path(c.download_artifacts(res.run_id, 'estimator_params.json', str(tmp_path))).read_text())
    assert cfg['class'] == 'sklearn.pipeline.Pipeline' and cfg['params']['memory'] is None and cfg['params']['verbose'] is False
    (n0, s0), (n1, s1) = cfg['params']['steps']
    assert (n0, s0['class'], n1) == ('scale', 'sklearn.preprocessing._data.StandardScaler', 'clf')
    assert s1['params']['C'] == 0.5 and s1['params']['solver'] == 'lbfgs' and s1['params']['tol'] == 0.0001  # every default is kept there

def test_sklearn_holds_out_a_stratified_validation_split_by_default(prj):
    from mlflow import MlflowClient
    from sklearn.neighbors import KNeighborsClassifier
    df = cancer()
    res = train(KNeighborsClassifier(n_neighbors=1), df, target='y', project=prj, log_model=False)
    assert (res.n_train, res.n_val) == (160, 40) and res.model.n_samples_fit_ == 160  # fit on the training split only
    assert res.metrics['train_accuracy'] == 1.0 and 0.5 < res.metrics['val_accuracy'] < 1.0, res.metrics  # 1-NN: perfect on the rows it saw
    ps = MlflowClient(prj.tracking_uri).get_run(res.run_id).data.params
    assert (ps['n_train'], ps['n_val'], ps['val_split'], ps['val_seed'], ps['val_stratified']) == ('160', '40', '0.2', '0', 'True')
    assert 'val_* on 40 held-out rows (20% of data, seed 0, stratified)' in repr(res) and 'train_* on the 160 rows fit on' in repr(res)
    again = train(KNeighborsClassifier(n_neighbors=1), df, target='y', project=prj, track=False)  # the same rows for the same seed
    assert again.metrics['val_accuracy'] == res.metrics['val_accuracy']

def test_sklearn_magic_val_0_is_no_split_and_a_fraction_changes_it(ip, prj, monkeypatch):
    from sklearn.linear_model import LogisticRegression
    monkeypatch.chdir(prj.root)
    ip.run_line_magic('config', 'MlnbMagics.widgets = False')
    ip.user_ns.update(clf=LogisticRegression(), df=cancer())
    try:
        r = ip.run_line_magic('mlnb', 'train clf --data df --target y')  # the default: validation metrics too
        assert (r.n_train, r.n_val) == (160, 40) and {'train_accuracy', 'val_accuracy'} <= set(r.metrics), r
        r0 = ip.run_line_magic('mlnb', 'train clf --data df --target y --val 0')  # crashed before: "needs (X, y) ... not int"
        assert (r0.n_train, r0.n_val) == (200, 0) and not [k for k in r0.metrics if k.startswith('val_')] and 'train_accuracy' in r0.metrics, r0
        r3 = ip.run_line_magic('mlnb', 'train clf --data df --target y --val 0.3')
        assert (r3.n_train, r3.n_val) == (140, 60) and 'val_accuracy' in r3.metrics, r3
    finally: ip.run_line_magic('config', 'MlnbMagics.widgets = True')
    with pytest.raises(TrainError, match='not a fraction'): train(LogisticRegression(), cancer(), target='y', val=1.5, project=prj, track=False)

def test_sklearn_val_dataframe_is_used_as_it_is(prj):
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression
    df = cancer(260)
    tr, va = df[:200], df[200:]
    res = train(LogisticRegression(), tr, target='y', val=va, project=prj, log_model=False)
    assert (res.n_train, res.n_val) == (200, 60)  # all of data fit on, all of val measured
    assert res.metrics['val_accuracy'] == evaluate(res.model, va, 'accuracy', target='y')['accuracy']
    ps = MlflowClient(prj.tracking_uri).get_run(res.run_id).data.params
    assert (ps['n_train'], ps['n_val'], ps['val_split']) == ('200', '60', 'given') and 'val_seed' not in ps
