"""`mlnb.train` on CUDA: device and precision picked automatically, MFU and GPU memory reported, fp16 with its grad
scaler checkpointed and resumed, a tiny transformer in bf16. Skips without CUDA."""
import importlib.util, math
from pathlib import Path
import pytest

torch = pytest.importorskip('torch')
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
TRACK = importlib.util.find_spec('mlflow') is not None  # the GPU image may lack MLflow: train untracked there

@pytest.fixture
def prj(tmp_path):
    from mlnb.config import Project
    (tmp_path/'mlnb.toml').write_text('[project]\nname = "gpu"\n')
    return Project(tmp_path)

def data(n=2048, d=64, k=10):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, d, generator=g)
    return X, (X[:, :k] + 0.3 * torch.randn(n, k, generator=g)).argmax(1)

def mlp(d=64, h=256, k=10):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.ReLU(), torch.nn.Linear(h, k))

def test_auto_picks_cuda_and_bf16_and_reports_mfu_and_memory(prj):
    from mlnb.training.loop import train
    X, y = data()
    r = train(mlp(), (X, y), val=0.2, epochs=6, batch_size=64, lr=3e-3, project=prj, track=TRACK, log_model=False, experiment='gpu')
    assert r.device == 'cuda' and r.precision == ('bf16' if torch.cuda.is_bf16_supported() else 'fp32')
    assert next(r.model.parameters()).is_cuda
    assert r.metrics['val_accuracy'] > 0.4 and r.samples_per_s > 0  # 10 classes: chance is 0.1
    assert r.history[-1]['gpu_mem_gb'] > 0
    name = torch.cuda.get_device_name()
    if any(k in name for k in ('H100', 'H200', 'A100')): assert r.mfu is not None and 0 < r.mfu < 1

def test_fp16_scaler_is_checkpointed_and_resumed(prj):
    from mlnb.training.fit import stop
    from mlnb.training.loop import train
    X, y = data()
    kw = dict(epochs=2, batch_size=128, lr=3e-3, precision='fp16', project=prj, track=TRACK, log_model=False, experiment='gpu')
    r1 = train(mlp(), (X, y), callbacks=[lambda ev: ev.kind == 'train.step' and ev.data['step'] == 5 and stop()], **kw)
    assert r1.stopped and r1.steps in (5, 6)  # on CUDA each loss is read one step late: the event for step 5 comes after step 6
    ck = torch.load(r1.checkpoint, weights_only=False)
    assert ck['scaler'] is not None and ck['step'] == r1.steps and 'cuda' in ck['rng']
    r2 = train(mlp(), (X, y), **kw)
    assert r2.resumed_from == r1.steps and r2.steps == 2 * math.ceil(2048 / 128) and not r2.stopped

def test_tiny_transformer_bf16_with_grad_accum_and_clip(prj):
    from transformers import BertConfig, BertForSequenceClassification
    from mlnb.training.loop import train
    torch.manual_seed(0)
    m = BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                                 intermediate_size=128, num_labels=2))
    ids = torch.randint(5, 100, (512, 32)); lab = (ids[:, 0] > 50).long()
    r = train(m, dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=lab), val=0.25, epochs=4, batch_size=32, lr=1e-3,
              grad_accum=2, clip=1.0, scheduler='cosine', project=prj, track=TRACK, log_model=False, experiment='gpu')
    assert r.steps == 4 * math.ceil(math.ceil(384 / 32) / 2)
    assert r.history[-1]['train_loss'] < r.history[0]['train_loss']
