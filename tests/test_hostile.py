"Attacks through a dataset or a run folder: nothing may run planted code or read outside the dataset."
import shutil
from pathlib import Path
import pandas as pd
import pytest
import torch
from mask_fastai.data import read_train, read_eval, DataError
from mask_fastai.runs import Run
from conftest import TINY_FLAGS, module, only_run


@pytest.mark.parametrize('bad_path', ['../../../outside', '/etc', '..', '../images/../../train'])
def test_train_csv_paths_cannot_leave_the_images_folder(sample_copy, bad_path):
    (sample_copy/'outside').mkdir()
    csv = sample_copy/'train'/'train.csv'
    people = pd.read_csv(csv, dtype=str); people.loc[3, 'path'] = bad_path; people.to_csv(csv, index=False)
    with pytest.raises(DataError, match=f"path '{bad_path}' leads outside"): read_train(sample_copy)
    with pytest.warns(UserWarning, match='bad path'): assert len(read_train(sample_copy, on_error='skip')) == 35*7


@pytest.mark.parametrize('escape', ['../../train/images/{folder}/mask1.jpg', '{root}/train/images/{folder}/mask1.jpg', '../info.csv'])
def test_eval_image_ids_cannot_leave_the_images_folder(sample_copy, escape):
    folder = sorted((sample_copy/'train'/'images').iterdir())[0].name
    csv = sample_copy/'eval'/'info.csv'
    info = pd.read_csv(csv, dtype=str); info.loc[2, 'ImageID'] = escape.format(folder=folder, root=sample_copy); info.to_csv(csv, index=False)
    with pytest.raises(DataError, match='leads outside'): read_eval(sample_copy)


def test_a_planted_checkpoint_does_not_run_on_resume(sample, tmp_path):
    "A shared run folder whose checkpoints carry a payload: --resume must not unpickle it"
    module('train', *TINY_FLAGS, '--epochs', '1', '--keep-checkpoints', 'true', '--out', tmp_path/'runs', cwd=tmp_path)
    run = Run(only_run(tmp_path/'runs'))
    marker = tmp_path/'pwned'
    class Payload:
        def __reduce__(self): return (Path.touch, (marker,))
    weights = torch.load(run.checkpoint_dir()/'best.pth', weights_only=True)
    for name in ('best.pth', 'last.pth'): torch.save({'model': weights, 'opt': Payload()}, run.checkpoint_dir()/name)
    state = run.read_json('state'); run.write_json('state', {**state, 'epoch': -1})      # as if killed after the checkpoint
    run.file('summary').unlink()
    r = module('train', '--resume', run.path, cwd=tmp_path, check=False)
    assert not marker.exists(), 'the planted pickle ran'
    assert r.returncode == 0 and run.status == 'finished'                              # retrained from the start instead


KILL_DURING_SAVE = '''
import io, pathlib, runpy, sys, time, torch
marker, save, calls = pathlib.Path(sys.argv[1]), torch.save, []
def half_written_save(obj, f, *args, **kwargs):
    "The second checkpoint of `last` is written halfway, then the process waits to be killed"
    if 'last' not in str(f): return save(obj, f, *args, **kwargs)
    if not calls:
        calls.append(f); return save(obj, f, *args, **kwargs)
    buf = io.BytesIO(); save(obj, buf, *args, **kwargs)
    with open(f, 'wb') as out: out.write(buf.getvalue()[:len(buf.getvalue())//2]); out.flush()
    marker.touch(); time.sleep(600)
torch.save = half_written_save
sys.argv = ['mask_fastai.train', *sys.argv[2:]]
runpy.run_module('mask_fastai.train', run_name='__main__')
'''


def test_a_kill_during_a_checkpoint_write_leaves_a_resumable_run(sample, tmp_path):
    "SIGKILL while the second epoch's checkpoint is half written: --resume continues from the first"
    import signal, subprocess, sys, time
    marker = tmp_path/'writing'
    p = subprocess.Popen([sys.executable, '-c', KILL_DURING_SAVE, marker, *TINY_FLAGS, '--epochs', '3', '--ema', '0.99', '--out', tmp_path/'runs'],
                         cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not marker.exists() and p.poll() is None and time.time() < deadline: time.sleep(0.05)
    assert marker.exists(), 'the run never reached its second checkpoint'
    p.send_signal(signal.SIGKILL); p.wait()
    run = Run(only_run(tmp_path/'runs'))
    assert run.read_json('state')['epoch'] == 0                       # the state still names the last complete checkpoint
    r = module('train', '--resume', run.path, cwd=tmp_path)
    assert run.status == 'finished' and 'unreadable' not in r.stderr   # continued from epoch 0's checkpoint, not from scratch
    assert 'starts again' not in r.stderr                               # and from epoch 0's average of the weights, kept beside epoch 1's
    assert pd.read_csv(run.metrics_file('unfrozen')).epoch.tolist() == [0, 1, 2]


def test_planted_pickles_do_not_run_on_predict_or_interpret(tiny_runs, tmp_path):
    "predict and interpret rebuild a run from its card and safetensors; the pickles beside them are never loaded"
    run = Run(shutil.copytree(tiny_runs[0], tmp_path/'run'))
    marker = tmp_path/'pwned'
    class Payload:
        def __reduce__(self): return (Path.touch, (marker,))
    torch.save(Payload(), run.file('export'))
    run.checkpoint_dir().mkdir()
    for name in ('best.pth', 'last.pth'): torch.save(Payload(), run.checkpoint_dir()/name)
    module('predict', run.path, '--out', tmp_path/'sub.csv', cwd=tmp_path)
    module('interpret', run.path, '--k', 2, cwd=tmp_path)
    assert not marker.exists() and (tmp_path/'sub.csv').exists()
