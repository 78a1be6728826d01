"""The embedded scheduler as processes: it fires, survives a restart (and a kill -9), never runs one job twice at once."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest

RECORD = ("import sys, time, os; t0 = time.time(); time.sleep(float(sys.argv[1])); "
          "open('runs.log', 'a').write(f'{t0} {time.time()} {os.getpid()}\\n')")

def runs(root):
    f = root/'runs.log'
    return [tuple(map(float, l.split()[:2])) for l in f.read_text().splitlines()] if f.exists() else []

def scheduler(root, seconds):
    return subprocess.Popen([sys.executable, '-m', 'mlnb.cli', 'scheduler', 'run', '--for', str(seconds), '--poll', '0.2'],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

def test_fires_and_survives_a_restart(project, mlnb_cli):
    root = project.root
    r = mlnb_cli('schedule', 'add', 'beat', '--cron', '* * * * * */2', '--', sys.executable, '-c', RECORD, '0', cwd=root)
    assert r.returncode == 0, r.stderr
    p = scheduler(root, 5); out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    first = len(runs(root))
    assert first >= 1 and "job 'beat' ok" in err
    r = mlnb_cli('schedule', 'list', cwd=root)
    assert 'beat' in r.stdout and ' ok ' in r.stdout
    p = scheduler(root, 5); p.communicate(timeout=120)  # a new scheduler process picks the schedule up
    assert len(runs(root)) > first
    assert json.loads((root/'.mlnb'/'schedules.json').read_text())['beat']['last_status'] == 'ok'

def test_never_twice_at_once_even_across_schedulers_and_kills(project, mlnb_cli):
    root = project.root
    assert mlnb_cli('schedule', 'add', 'slow', '--cron', '* * * * * *', '--', sys.executable, '-c', RECORD, '2.5', cwd=root).returncode == 0
    a, b = scheduler(root, 8), scheduler(root, 8)  # two schedulers on one project
    time.sleep(3)
    a.send_signal(signal.SIGKILL)  # one dies while its job may be running
    a.wait(); b.communicate(timeout=120)
    c = scheduler(root, 3); c.communicate(timeout=120)
    time.sleep(3)  # let an orphaned job finish writing
    rs = sorted(runs(root))
    assert len(rs) >= 2
    for (s1, e1), (s2, e2) in zip(rs, rs[1:]): assert s2 >= e1 - 0.05, f"overlapping runs: {rs}"

def test_bad_schedules(project, mlnb_cli):
    root = project.root
    r = mlnb_cli('schedule', 'add', 'x', '--cron', '61 * * * *', '--', 'true', cwd=root)
    assert r.returncode == 1 and 'malformed cron expression' in r.stderr and 'five fields' in r.stderr
    r = mlnb_cli('schedule', 'add', 'x', '--cron', '0 3 * * *', cwd=root)
    assert r.returncode == 1 and 'has no command' in r.stderr
    r = mlnb_cli('schedule', 'remove', 'nope', cwd=root)
    assert r.returncode == 1 and "no job named 'nope'" in r.stderr
    r = mlnb_cli('schedule', 'add', 'x', '--cron', '0 3 * * *', '--missed', 'always', '--', 'true', cwd=root)
    assert r.returncode == 2 and "invalid choice: 'always'" in r.stderr
    assert not (root/'.mlnb'/'schedules.json').exists() or json.loads((root/'.mlnb'/'schedules.json').read_text()) == {}
