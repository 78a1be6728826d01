"""Shared fixtures: a fresh mlnb project, the `mlnb` command in a subprocess, an IPython shell with the extension;
and `serve_process`, a real `mlnb serve` on loopback (`from conftest import serve_process`)."""
import os, socket, subprocess, sys, time
from contextlib import contextmanager
from pathlib import Path
import pytest

SERVE_CLI = [sys.executable, '-c', 'import sys; from mlnb.cli import main; sys.exit(main())']

def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def serve_env() -> dict:
    "The environment of an `mlnb` subprocess: no DVC analytics, no MLNB_PROJECT (the project is the working folder)."
    e = {**os.environ, 'DVC_NO_ANALYTICS': '1'}
    e.pop('MLNB_PROJECT', None)
    return e

@contextmanager
def serve_process(prj, *args, port=None):
    "`mlnb serve ARGS` in a subprocess on a free loopback port; yields its URL once /ready answers; stops it after."
    import httpx
    port = port or free_port()
    log_path = prj.root/f'serve-{port}.log'  # outside .mlnb/: the server's own console
    log = open(log_path, 'w')
    p = subprocess.Popen([*SERVE_CLI, 'serve', *map(str, args), '--host', '127.0.0.1', '--port', str(port)],
                         cwd=prj.root, env=serve_env(), stdout=log, stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}'
    try:
        t0 = time.time()
        while True:
            if p.poll() is not None: raise AssertionError(f"server exited {p.returncode}: {log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f'{url}/ready', timeout=2).status_code == 200: break
            except httpx.TransportError: pass
            assert time.time() - t0 < 120, 'server did not become ready'
            time.sleep(0.2)
        yield url
    finally:
        p.terminate()
        try: p.wait(30)
        except subprocess.TimeoutExpired: p.kill(); p.wait()
        log.close()

@pytest.fixture
def mlnb_cli():
    "Run `mlnb ARGS...` in a subprocess; returns the CompletedProcess (text)."
    def run(*args, cwd=None, env=None, timeout=300):
        e = {**os.environ, 'DVC_NO_ANALYTICS': '1', **(env or {})}
        e.pop('MLNB_PROJECT', None) if 'MLNB_PROJECT' not in (env or {}) else None
        return subprocess.run([sys.executable, '-m', 'mlnb.cli', *map(str, args)], cwd=cwd, env=e,
                              capture_output=True, text=True, timeout=timeout)
    return run

@pytest.fixture
def project(tmp_path, monkeypatch):
    "A fresh project made by `mlnb.project.init`, with the working directory inside it."
    from mlnb.project import init
    prj = init(tmp_path/'proj')
    monkeypatch.chdir(prj.root)
    return prj

@pytest.fixture
def ip():
    "An IPython shell with `%load_ext mlnb` done (and undone afterwards)."
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    shell.run_line_magic('load_ext', 'mlnb')
    yield shell
    shell.run_line_magic('unload_ext', 'mlnb')

@pytest.fixture(scope='session')
def tiny_bert():
    """Builds a 2-layer BERT from a config and a word-level tokenizer trained here (nothing from a hub), both saved to a
    folder, on `n` short texts whose label is in their words; returns `(texts, labels)`."""
    def build(folder:Path, n:int=400, hidden:int=32):
        import random, torch
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers
        from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast
        random.seed(0)
        pos, neg = 'good great fine nice lovely superb happy excellent'.split(), 'bad awful poor sad terrible ugly worse horrible'.split()
        labels = [i % 2 for i in range(n)]
        texts = [' '.join(random.choice((pos if lab else neg) + ['the', 'a', 'movie', 'was']) for _ in range(8)) for lab in labels]
        tk = Tokenizer(models.WordLevel(unk_token='[UNK]')); tk.pre_tokenizer = pre_tokenizers.Whitespace()
        tk.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=['[PAD]', '[UNK]', '[CLS]', '[SEP]']))
        tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token='[UNK]', pad_token='[PAD]', cls_token='[CLS]', sep_token='[SEP]')
        tok.save_pretrained(folder)
        cfg = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=2 * hidden, max_position_embeddings=64, num_labels=2)
        torch.manual_seed(0); BertForSequenceClassification(cfg).save_pretrained(folder)
        return texts, labels
    return build
