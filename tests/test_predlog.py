"""The prediction log loses nothing when it rolls over (issue 22, point 0): every row written is in one of its files."""
import json
from mlnb.track.predictions import PredictionLog, segments


def test_rollover_keeps_every_row(tmp_path):
    path = tmp_path/'served'/'m.jsonl'
    log = PredictionLog(path, max_bytes=4096, flush_s=60)  # flushed by hand below: many rollovers, deterministic
    for b in range(40):
        log.add([{'id': f"{b}-{i}", 'model': 'm', 'version': 1, 'input': {'x': i}, 'output': i % 2} for i in range(10)])
        log.flush()
    log.close()
    segs = segments(path)
    assert len(segs) >= 5 and [s.name for s in segs] == [f"m.jsonl.{n}" for n in range(1, len(segs) + 1)]
    rows = [json.loads(l) for f in segs + [path] for l in f.read_text().splitlines()]
    assert len(rows) == 400 and [r['id'] for r in rows] == [f"{b}-{i}" for b in range(40) for i in range(10)]
    assert all(f.stat().st_size <= 4096 for f in segs)


def test_a_second_log_on_the_same_file_never_overwrites_a_segment(tmp_path):
    "Two writers (server workers) rolling the same file over: the segment names they claim never collide."
    path = tmp_path/'m.jsonl'
    a, b = PredictionLog(path, max_bytes=300, flush_s=60), PredictionLog(path, max_bytes=300, flush_s=60)
    for k in range(30):
        (a if k % 2 else b).add([{'id': str(k), 'input': [k] * 10, 'output': 0}])
        (a if k % 2 else b).flush()
    a.close(); b.close()
    ids = [json.loads(l)['id'] for f in segments(path) + [path] for l in f.read_text().splitlines()]
    assert sorted(ids, key=int) == [str(k) for k in range(30)]


def test_flush_waits_for_the_writer_threads_flush(tmp_path):
    "A flush called while the writer thread is still writing its batch returns only once that batch is on disk."
    import time
    path = tmp_path/'m.jsonl'
    log = PredictionLog(path, flush_s=0.05, transform=lambda r: (time.sleep(0.3), r)[1])  # a slow field policy
    log.add([{'id': '1', 'input': {'x': 1}, 'output': 0}])
    time.sleep(0.15)  # the writer thread has taken the row and is transforming it
    log.flush()
    assert [json.loads(l)['id'] for l in path.read_text().splitlines()] == ['1']
    log.close()
