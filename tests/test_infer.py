"predict, interpret, bench and runs from the command line, and label-noise suspects on deliberately corrupted sample data."
import json, platform, shutil
from pathlib import Path
import pandas as pd
import pytest
from mask_fastai.data import check_submission, DataError
from mask_fastai.sample import sample_data
from mask_fastai.settings import resolve_config
from mask_fastai.runs import Run
from mask_fastai.train import train
from mask_fastai.interpret import interpret_run
from conftest import TINY, module, only_run


def printed_json(r): return json.loads(r.stdout[r.stdout.index('{'):])


@pytest.fixture(scope='module')
def good_run(sample, tmp_path_factory):
    "A pretrained run that has learnt the sample's cues"
    out = tmp_path_factory.mktemp('good')
    return train(resolve_config(out=str(out), size='96,72', bs=32, epochs=4, sample_people=60, num_workers=0))['run_dir']


def test_predict_one_run_tta_and_no_overwrite_without_force(tiny_runs, sample, tmp_path):
    sub, info = tmp_path/'submission.csv', pd.read_csv(sample/'eval'/'info.csv')
    res = printed_json(module('predict', tiny_runs[0], '--out', sub, cwd=tmp_path))
    check_submission(pd.read_csv(sub), info)
    own = pd.read_csv(Run(tiny_runs[0]).file('submission'))
    assert res['n'] == len(info) and res['tta'] is False and pd.read_csv(sub).ans.tolist() == own.ans.tolist()
    before = sub.read_bytes()
    r = module('predict', tiny_runs[0], '--out', sub, cwd=tmp_path, check=False)
    assert r.returncode == 2 and 'pass --force true' in r.stderr and sub.read_bytes() == before
    res = printed_json(module('predict', tiny_runs[0], '--out', sub, '--force', 'true', '--tta', 'true', cwd=tmp_path))
    assert res['tta'] is True
    check_submission(pd.read_csv(sub), info)


def test_predict_ensembles_three_runs_soft_hard_and_fitted(tiny_runs, sample, tmp_path):
    info = pd.read_csv(sample/'eval'/'info.csv')
    for extra in ([], ['--vote', 'hard'], ['--weights', '1,2,1'], ['--fit', 'true']):
        sub = tmp_path/f"sub{'_'.join(extra)}.csv"
        r = module('predict', *tiny_runs, '--out', sub, *extra, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        check_submission(pd.read_csv(sub), info)
        assert isinstance(printed_json(r).get('oof'), dict) == (extra in ([], ['--weights', '1,2,1']))   # the soft vote's own out-of-fold score
    res = printed_json(r)
    assert set(res['oof_cv']) >= {'plain', 'fitted', 'gain'}
    plan_file = sub.with_suffix('.plan.json')
    plan = json.loads(plan_file.read_text())
    assert len(plan['weights']) == 3 and len(plan['biases']) == 18 and res['plan_file'] == str(plan_file)
    module('predict', *tiny_runs, '--out', tmp_path/'again.csv', '--plan', plan_file, cwd=tmp_path)
    assert pd.read_csv(tmp_path/'again.csv').ans.tolist() == pd.read_csv(sub).ans.tolist()
    r = module('predict', *tiny_runs, '--out', tmp_path/'other.csv', '--plan', plan_file, '--vote', 'hard', cwd=tmp_path, check=False)
    assert r.returncode == 2 and 'drop --vote hard' in r.stderr and not (tmp_path/'other.csv').exists()
    r = module('predict', *tiny_runs[:2], '--out', tmp_path/'other.csv', '--plan', plan_file, cwd=tmp_path, check=False)
    assert r.returncode == 2 and 'a plan for 2 run(s)' in r.stderr


def test_submission_checks_reject_bad_files(sample):
    info = pd.read_csv(sample/'eval'/'info.csv')
    good = info.assign(ans=1)
    with pytest.raises(DataError, match='rows'): check_submission(good.iloc[:-1], info)
    with pytest.raises(DataError, match='order'): check_submission(good.iloc[::-1].reset_index(drop=True), info)
    with pytest.raises(DataError, match='0..17'): check_submission(good.assign(ans=-1), info)


def test_interpret_cli_writes_its_files(tiny_runs, tmp_path):
    r = module('interpret', tiny_runs[1], '--k', 4, cwd=tmp_path)
    out = Run(tiny_runs[1]).file('interpret')
    assert str(out) in r.stdout
    for f in ('top_losses.png', 'confusion_18.png', 'confusion_tasks.png', 'per_class.csv', 'most_confused.csv', 'suspects.csv', 'report.md'):
        assert (out/f).stat().st_size > 0, f
    assert len(pd.read_csv(out/'per_class.csv')) == 18


def test_fold_folders_predict_and_interpret_with_their_own_data(tmp_path):
    "A fold folder of a --folds all run names its own dataset and fold, so neither falls back to a default"
    out = tmp_path/'runs'
    module('train', *[a for k, v in {**TINY, 'n_folds': 2}.items() for a in (f"--{k.replace('_', '-')}", str(v).lower())],
           '--epochs', '1', '--folds', 'all', '--out', out, cwd=tmp_path)
    run = Run(only_run(out))
    fold = run.fold_runs()[1]
    data = sample_data(n_people=TINY['sample_people'])
    assert fold.config()['fold'] == 1 and fold.dataset() == data
    res = printed_json(module('predict', fold.path, '--out', tmp_path/'sub.csv', cwd=tmp_path))
    assert res['n'] == len(pd.read_csv(data/'eval'/'info.csv'))
    module('interpret', fold.path, '--k', 2, cwd=tmp_path)
    per_class = pd.read_csv(fold.file('interpret')/'per_class.csv')
    assert per_class.support.sum() == len(fold.read_probs('oof'))          # the fold's own validation photos
    r = module('runs', out, '--changed', 'false', cwd=tmp_path)
    assert run.name in r.stdout and 'finished' in r.stdout


def test_suspects_rank_corrupted_people_near_the_top(good_run, tmp_path):
    data = Path(shutil.copytree(sample_data(n_people=40, n_eval=6, seed=1), tmp_path/'data'))
    people = pd.read_csv(data/'train'/'train.csv', dtype=str)
    flipped, swapped = people.id[:10].tolist(), people.id[10:15].tolist()
    rows = people.id.isin(flipped)
    people.loc[rows, 'gender'] = people.loc[rows, 'gender'].map({'male': 'female', 'female': 'male'})
    people.to_csv(data/'train'/'train.csv', index=False)
    for folder in people[people.id.isin(swapped)].path:
        d = data/'train'/'images'/folder
        (d/'normal.jpg').rename(d/'x.jpg'); (d/'incorrect_mask.jpg').rename(d/'normal.jpg'); (d/'x.jpg').rename(d/'incorrect_mask.jpg')
    out = interpret_run(good_run, data=data, k=4, out=tmp_path/'interp')
    s = pd.read_csv(out/'suspects.csv', dtype={'id': str})
    top = set(s.id[:15])
    assert len(top & set(flipped + swapped)) >= 12, s.head(20)
    assert len(top & set(swapped)) >= 4 and len(top & set(flipped)) >= 8


def test_bench_quick_records_its_section(sample, tmp_path):
    md = tmp_path/'BENCHMARKS.md'
    md.write_text('# Benchmarks\n\nHand-written notes stay.\n')
    module('bench', '--quick', 'true', '--out', md, '--runs', tmp_path/'runs', cwd=tmp_path)
    text = md.read_text()
    assert 'Hand-written notes stay.' in text and '<!-- bench:start -->' in text and '| training img/s |' in text
    assert '| mask_fastai minutes | macro F1 |' in text and '`python -m mask_fastai.bench --quick true`' in text
    assert ('freed memory kept in the process for both loops' in text) == (platform.libc_ver()[0] == 'glibc')   # --keep-memory is on by default


def test_predict_a_folder_of_photos_without_info_csv(tiny_runs, sample, tmp_path):
    photos = tmp_path/'photos'; photos.mkdir()
    for f in sorted((sample/'eval'/'images').iterdir())[:5]: shutil.copy(f, photos/f.name)
    (photos/'.DS_Store').write_bytes(b'x')
    res = printed_json(module('predict', *tiny_runs[:2], '--images', photos, '--out', tmp_path/'preds.csv', cwd=tmp_path))
    table = pd.read_csv(tmp_path/'preds.csv')
    assert res['n'] == 5 == len(table) and set(table.photo) == {str(f) for f in photos.glob('*.jpg')}
    assert {'label', 'class_name', 'mask', 'gender', 'age_band', 'prob', 'p17'} <= set(table.columns)
    assert (table.filter(regex=r'^p\d+$').sum(axis=1) - 1).abs().max() < 1e-4
    r = module('predict', tiny_runs[0], '--images', photos, '--vote', 'hard', '--out', tmp_path/'x.csv', cwd=tmp_path, check=False)
    assert r.returncode == 2 and 'soft vote' in r.stderr


def test_export_onnx_and_predict_with_onnxruntime(tiny_runs, tmp_path):
    run = Run(shutil.copytree(tiny_runs[1], tmp_path/'run'))            # the multi-task run
    r = module('predict', run.path, '--engine', 'onnx', '--out', tmp_path/'x.csv', cwd=tmp_path, check=False)
    assert r.returncode == 2 and 'python -m mask_fastai.export' in r.stderr
    module('export', run.path, '--onnx', 'true', cwd=tmp_path)
    assert run.file('onnx').stat().st_size > 0
    torch_res = printed_json(module('predict', run.path, '--out', tmp_path/'torch.csv', cwd=tmp_path))
    onnx_res = printed_json(module('predict', run.path, '--engine', 'onnx', '--out', tmp_path/'onnx.csv', cwd=tmp_path))
    assert onnx_res['engine'] == 'onnx'
    assert pd.read_csv(tmp_path/'onnx.csv').ans.tolist() == pd.read_csv(tmp_path/'torch.csv').ans.tolist()
    assert onnx_res['scores'] == pytest.approx(torch_res['scores'])
