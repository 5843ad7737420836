"predict, interpret and bench from the command line, and label-noise suspects on deliberately corrupted sample data."
import json, shutil, subprocess, sys
from pathlib import Path
import pandas as pd
import pytest
from mask_fastai.data import read_eval, check_submission, DataError
from mask_fastai.sample import sample_data
from mask_fastai.train import resolve_config, train
from mask_fastai.interpret import interpret_run


def module(name, *args, cwd, check=True):
    r = subprocess.run([sys.executable, '-m', f'mask_fastai.{name}', *map(str, args)], cwd=cwd, capture_output=True, text=True)
    if check and r.returncode: raise AssertionError(f'{name} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}')
    return r


@pytest.fixture(scope='module')
def tiny_runs(sample, tmp_path_factory):
    "Three quick runs on the shared sample and folds, differing in seed and head"
    out = tmp_path_factory.mktemp('runs')
    cfg = resolve_config(out=str(out), arch='test_efficientnet', pretrained=False, size=48, bs=16, epochs=1,
                         sample_people=36, num_workers=0, n_folds=3)
    return [train({**cfg, 'seed': s, 'multitask': s == 2, 'name': f'r{s}'})['run_dir'] for s in (1, 2, 3)]


@pytest.fixture(scope='module')
def good_run(sample, tmp_path_factory):
    "A pretrained run that has learnt the sample's cues"
    out = tmp_path_factory.mktemp('good')
    return train(resolve_config(out=str(out), size='96,72', bs=32, epochs=4, sample_people=60, num_workers=0))['run_dir']


def test_predict_one_run_and_no_overwrite_without_force(tiny_runs, sample, tmp_path):
    sub = tmp_path/'submission.csv'
    r = module('predict', tiny_runs[0], '--out', sub, cwd=tmp_path)
    res = json.loads(r.stdout[r.stdout.index('{'):])
    info = pd.read_csv(sample/'eval'/'info.csv')
    check_submission(pd.read_csv(sub), info)
    assert res['n'] == len(info) and 0 <= res['scores']['macro_f1'] <= 1
    before = sub.read_bytes()
    r = module('predict', tiny_runs[0], '--out', sub, cwd=tmp_path, check=False)
    assert r.returncode != 0 and 'pass --force' in r.stderr and sub.read_bytes() == before
    module('predict', tiny_runs[0], '--out', sub, '--force', '--tta', cwd=tmp_path)
    check_submission(pd.read_csv(sub), info)


def test_predict_ensembles_three_runs_soft_hard_and_fitted(tiny_runs, sample, tmp_path):
    info = pd.read_csv(sample/'eval'/'info.csv')
    for extra in ([], ['--vote', 'hard'], ['--weights', '1,2,1'], ['--fit']):
        sub = tmp_path/f"sub{'_'.join(extra)}.csv"
        r = module('predict', *tiny_runs, '--out', sub, *extra, cwd=tmp_path)
        check_submission(pd.read_csv(sub), info)
    res = json.loads(r.stdout[r.stdout.index('{'):])
    assert set(res['oof_cv']) >= {'plain', 'fitted', 'gain'}
    plan = json.loads(sub.with_suffix('.plan.json').read_text())
    assert len(plan['weights']) == 3 and len(plan['biases']) == 18
    module('predict', *tiny_runs, '--out', tmp_path/'again.csv', '--plan', sub.with_suffix('.plan.json'), cwd=tmp_path)
    assert pd.read_csv(tmp_path/'again.csv').ans.tolist() == pd.read_csv(sub).ans.tolist()


def test_submission_checks_reject_bad_files(sample):
    info = pd.read_csv(sample/'eval'/'info.csv')
    good = info.assign(ans=1)
    with pytest.raises(DataError, match='rows'): check_submission(good.iloc[:-1], info)
    with pytest.raises(DataError, match='order'): check_submission(good.iloc[::-1].reset_index(drop=True), info)
    with pytest.raises(DataError, match='0..17'): check_submission(good.assign(ans=-1), info)


def test_interpret_cli_writes_its_files(tiny_runs, tmp_path):
    r = module('interpret', tiny_runs[1], '--k', 4, cwd=tmp_path)
    out = Path(tiny_runs[1])/'interpret'
    assert str(out) in r.stdout
    for f in ('top_losses.png', 'confusion_18.png', 'confusion_tasks.png', 'per_class.csv', 'most_confused.csv', 'suspects.csv', 'report.md'):
        assert (out/f).stat().st_size > 0, f
    assert len(pd.read_csv(out/'per_class.csv')) == 18


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
    module('bench', '--quick', '--out', md, '--runs', tmp_path/'runs', cwd=tmp_path)
    text = md.read_text()
    assert 'Hand-written notes stay.' in text and '<!-- bench:start -->' in text and '| training img/s |' in text
    assert '| mask_fastai minutes | macro F1 |' in text
