"""Training throughput on CUDA: `mlnb.train` vs a hand-written PyTorch loop, vs the Hugging Face Trainer, and both
compiled. A BERT-base-sized classifier built from a config (12 layers, hidden 768), batch 64, sequence 128, bf16,
AdamW, random token ids: the same model, data, batch and precision on every side, in one process.

Every side is timed the same way: steady-state samples/s from the end of warm-up step WARM to the last step (CUDA
synchronised at both ends). MFU = samples/s x 6 x non-embedding parameters x tokens / the GPU's dense bf16 peak.
mlnb runs with its per-step events and a text progress renderer on, and tracking on where MLflow is installed.

Prints one JSON line per case: {"bench": "train", "case": ..., "mlnb": samples_per_s, "peer": samples_per_s,
"unit": "samples/s", "ratio": mlnb/peer (vs plain loop and compiled: the median of paired ratios, A/B then B/A), "mfu_mlnb": ..., "mfu_peer": ...}. Targets (issue 5): vs plain loop >= 0.97,
vs hf trainer >= 1.3, compiled vs compiled plain loop >= 0.97.
`BENCH_SMALL=1` shrinks everything for a CPU smoke test of this script (numbers then mean nothing).
"""
import importlib.util, io, json, os, statistics, sys, tempfile, time
from pathlib import Path
import torch

SMALL = bool(os.environ.get('BENCH_SMALL'))
DEV = 'cuda' if torch.cuda.is_available() else 'cpu'
B, T = (8, 16) if SMALL else (64, 128)
STEPS, WARM = (8, 3) if SMALL else (int(os.environ.get('BENCH_STEPS', 60)), 10)
PREC = 'bf16' if DEV == 'cuda' else 'fp32'
TRACK = importlib.util.find_spec('mlflow') is not None

def config():
    from transformers import BertConfig
    if SMALL: return BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=2)
    return BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                      max_position_embeddings=512, num_labels=2)

def model():
    from transformers import BertForSequenceClassification
    torch.manual_seed(0)
    return BertForSequenceClassification(config())

def data(n):
    g = torch.Generator().manual_seed(0)
    return dict(input_ids=torch.randint(5, config().vocab_size, (n, T), generator=g), attention_mask=torch.ones(n, T, dtype=torch.long),
                labels=torch.randint(0, 2, (n,), generator=g))

def sync():
    if DEV == 'cuda': torch.cuda.synchronize()

def plain_loop(d, compile=False):
    "The peer: a hand-written loop (pinned host batches, non-blocking copies, autocast)."
    net = model().to(DEV)
    fwd = torch.compile(net) if compile else net
    opt = torch.optim.AdamW(net.parameters(), lr=5e-5)
    host = {k: v.pin_memory() if DEV == 'cuda' else v for k, v in d.items()}
    n, t0 = len(host['labels']), None
    for step in range(1, STEPS + 1):
        i = (step - 1) * B % n
        b = {k: v[i:i + B].to(DEV, non_blocking=True) for k, v in host.items()}
        with torch.autocast(DEV, dtype=torch.bfloat16, enabled=PREC == 'bf16'):
            loss = fwd(**b).loss
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        if step == WARM: sync(); t0 = time.perf_counter()
    sync()
    return (STEPS - WARM) * B / (time.perf_counter() - t0)

def hf_trainer(d):
    from transformers import Trainer, TrainerCallback, TrainingArguments
    class Timer(TrainerCallback):
        t0 = None
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == WARM: sync(); Timer.t0 = time.perf_counter()
    class DS(torch.utils.data.Dataset):
        def __len__(self): return len(d['labels'])
        def __getitem__(self, i): return {k: v[i] for k, v in d.items()}
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=B, max_steps=STEPS, learning_rate=5e-5, bf16=PREC == 'bf16',
                                 report_to=[], save_strategy='no', logging_steps=10 ** 6, disable_tqdm=True, dataloader_pin_memory=DEV == 'cuda',
                                 use_cpu=DEV == 'cpu')
        Trainer(model=model(), args=args, train_dataset=DS(), callbacks=[Timer()]).train()
    sync()
    return (STEPS - WARM) * B / (time.perf_counter() - Timer.t0)

def with_mlnb(d, prj, compile=False):
    from mlnb.core import TextRenderer, events
    from mlnb.training.loop import train
    sink = io.StringIO()
    with events.listening('*', TextRenderer(sink, min_interval=0.5)):
        r = train(model(), d, epochs=1, batch_size=B, lr=5e-5, precision=PREC, compile=compile, project=prj, track=TRACK, experiment='bench',
                  log_model=False, resume=False)
    assert r.steps == STEPS, r
    return r

def mfu(sps, net, d):
    from mlnb.training.metrics import flops_per_sample, peak_flops
    peak = peak_flops(DEV)
    return round(sps * flops_per_sample(net, ({k: v[:1] for k, v in d.items()}, None)) / peak, 4) if peak else None

def line(case, m, p, net, d, **extra):
    out = {"bench": "train", "case": case, "mlnb": round(m, 1), "peer": round(p, 1), "unit": "samples/s", "ratio": round(m / p, 3),  # a paired median in extra wins
           "mfu_mlnb": mfu(m, net, d), "mfu_peer": mfu(p, net, d), "device": torch.cuda.get_device_name() if DEV == 'cuda' else 'cpu',
           "precision": PREC, "batch": B, "seq": T, "steps": STEPS, "tracking": TRACK, **extra}
    print(json.dumps(out), flush=True)

def main():
    from mlnb.config import Project
    if DEV == 'cuda': torch.backends.cuda.matmul.allow_tf32 = True
    d = data(STEPS * B)
    net = model()
    with tempfile.TemporaryDirectory() as root:
        (Path(root)/'mlnb.toml').write_text('[project]\nname = "bench"\n')
        prj = Project(root)
        with_mlnb(d, prj); plain_loop(d)  # warm-up: kernels, allocator, imports
        m, p = [], []
        for i in range(int(os.environ.get('BENCH_PAIRS', 3))):  # A B, B A, A B: drifts cancel
            if i % 2 == 0: m.append(with_mlnb(d, prj).samples_per_s); p.append(plain_loop(d))
            else: p.append(plain_loop(d)); m.append(with_mlnb(d, prj).samples_per_s)
        line("vs plain loop", statistics.median(m), statistics.median(p), net, d, ratio=round(statistics.median(a / b for a, b in zip(m, p)), 3),
             mlnb_runs=[round(x) for x in m], peer_runs=[round(x) for x in p])
        line("vs hf trainer", statistics.median(m), hf_trainer(d), net, d)
        if os.environ.get('BENCH_NO_COMPILE'): return
        mc, pc = [], []
        for i in range(int(os.environ.get('BENCH_COMPILE_PAIRS', 2))):  # P M, M P: drifts cancel here too
            if i % 2 == 0: pc.append(plain_loop(d, compile=True)); mc.append(with_mlnb(d, prj, compile=True).samples_per_s)
            else: mc.append(with_mlnb(d, prj, compile=True).samples_per_s); pc.append(plain_loop(d, compile=True))
        line("compiled vs compiled plain loop", statistics.median(mc), statistics.median(pc), net, d,
             ratio=round(statistics.median(a / b for a, b in zip(mc, pc)), 3), mlnb_runs=[round(x) for x in mc], peer_runs=[round(x) for x in pc])

if __name__ == '__main__': main()
