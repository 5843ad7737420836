"One model trained by two CPU processes (gloo) through torchrun, as a user launches it"
import subprocess, sys, time
from pathlib import Path
import pandas as pd, psutil
from conftest import TINY_FLAGS, only_run
from mask_fastai.runs import Run
from mask_fastai.inference import load_run, run_probs
from mask_fastai.distributed import weights_digest
from mask_fastai.metrics import mask_scores


def torchrun(*args, cwd, **kw):
    "`torchrun --standalone --nproc_per_node 2 -m mask_fastai.train args`"
    launcher = Path(sys.executable).with_name('torchrun')
    cmd = [str(launcher)] if launcher.exists() else [sys.executable, '-m', 'torch.distributed.run']
    return subprocess.Popen([*cmd, '--standalone', '--nproc_per_node', '2', '-m', 'mask_fastai.train', *map(str, args)],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def finished(p):
    "The output of launcher `p`, which must succeed"
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, f'torchrun failed ({p.returncode}):\n{out[-3000:]}\n{err[-5000:]}'
    return out


def test_two_processes_train_one_model(sample, tmp_path):
    "One run folder; both ranks read half the batches and end with the same weights and average; the logged F1 is the whole validation set's"
    out = finished(torchrun(*TINY_FLAGS, '--n-folds', 5, '--epochs', 1, '--out', tmp_path/'runs', cwd=tmp_path))
    run = Run(only_run(tmp_path/'runs'))
    assert out.count('run folder:') == 1 and '(2 processes)' in out
    ranks = run.read_json('summary')['processes']
    assert [r['rank'] for r in ranks] == [0, 1]
    oof = run.read_probs('oof')
    n_train = 36*7 - len(oof)
    assert all(n_train//2 - 16 < r['train_photos'] <= n_train//2 for r in ranks)   # each rank its half, less a dropped last batch
    assert ranks[0]['weights'] == ranks[1]['weights']
    assert ranks[0]['average'] == ranks[1]['average'] != ranks[0]['weights']   # the default keeps an average of the weights
    assert weights_digest(load_run(run.path).model) == ranks[0]['average']   # one epoch: the saved weights are its average
    assert len(oof) % 2 == 1   # an odd validation set: one rank's share was padded with a repeated photo
    logged = pd.read_csv(run.metrics_file('unfrozen')).macro_f1.iloc[-1]
    single = mask_scores(run_probs(run.path, oof[['path']]), oof.label.values)['macro_f1']
    assert abs(logged - single) < 1e-9, (logged, single)


def test_two_processes_resume_a_killed_run(sample, tmp_path):
    "Both processes killed mid-run; `--resume` under two processes completes it with every epoch logged once"
    p = torchrun(*TINY_FLAGS, '--epochs', 12, '--out', tmp_path/'runs', cwd=tmp_path)
    deadline = time.time() + 300
    while p.poll() is None and time.time() < deadline:
        if list((tmp_path/'runs').glob('*/state.json')): break
        time.sleep(0.05)
    assert p.poll() is None, 'the run ended before it could be killed'
    for proc in [*psutil.Process(p.pid).children(recursive=True), psutil.Process(p.pid)]: proc.kill()   # the workers and the launcher
    p.communicate()
    run = Run(only_run(tmp_path/'runs'))
    stopped = run.read_json('state')['epoch']
    assert stopped < 11 and run.status != 'finished'
    finished(torchrun('--resume', run.path, cwd=tmp_path))
    assert run.status == 'finished'
    assert pd.read_csv(run.metrics_file('unfrozen')).epoch.tolist() == list(range(12))
    assert len(run.read_json('summary')['processes']) == 2


def test_lr_find_is_refused_across_processes(sample, tmp_path):
    "--lr-find runs in one process: under torchrun it is refused, naming the way out, before any folder is made"
    p = torchrun(*TINY_FLAGS, '--lr-find', 'true', '--out', tmp_path/'runs', cwd=tmp_path)
    out, err = p.communicate(timeout=300)
    assert p.returncode != 0 and '--lr-find runs in one process' in err
    assert not (tmp_path/'runs').exists()
