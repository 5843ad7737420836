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
