"Run folders as other people leave them: failed, unfinished, damaged or tampered ones are listed or refused clearly."
import shutil
from pathlib import Path
import pandas as pd
import pytest
from mask_fastai.runs import Run, compare_runs
from mask_fastai.inference import run_probs
from mask_fastai.data import read_eval
from conftest import module


@pytest.fixture
def runs_dir(tiny_runs, tmp_path):
    "A folder with two finished runs, one failed, one unfinished (killed) and one that is not a run"
    d = tmp_path/'runs'; d.mkdir()
    for r in tiny_runs[:2]: shutil.copytree(r, d/Path(r).name)
    failed = Run(d/'failed'); failed.write_config(Run(tiny_runs[0]).config()); failed.mark_failed('DataError: a bad photo')
    unfinished = Run(d/'unfinished'); unfinished.write_config(Run(tiny_runs[0]).config())
    (d/'notes').mkdir()
    return d


def test_compare_lists_every_folder_with_its_status(runs_dir, tmp_path):
    t = compare_runs(runs_dir)
    assert t.status.to_dict() == {**{n: 'finished' for n in t.index if n.startswith('2')}, 'failed': 'failed', 'unfinished': 'unfinished', 'notes': 'not a run'}
    assert t.loc['failed', 'error'] == 'DataError: a bad photo'
    assert t.valid_macro_f1.notna().sum() == 2 and t.index[:2].str.match(r'\d').all()   # finished runs first
    r = module('runs', runs_dir, '--csv', tmp_path/'t.csv', '--md', tmp_path/'t.md', cwd=tmp_path)
    assert 'unfinished' in r.stdout and 'failed' in r.stdout
    assert len(pd.read_csv(tmp_path/'t.csv')) == 5 and (tmp_path/'t.md').read_text().startswith('| run | status |')


def test_compare_against_a_run_gives_the_difference_over_the_people_both_scored(tiny_runs, tmp_path):
    "--against adds each run's macro F1 less the base run's on the validation and eval photos, with the difference's 95% interval over people"
    t = compare_runs(tiny_runs, against=tiny_runs[0])
    base, cols = Run(tiny_runs[0]).name, [f'{s}_macro_f1_diff{e}' for s in ('valid', 'eval') for e in ('', '_lo', '_hi')]
    assert (t.loc[base, cols] == 0).all()
    for r in tiny_runs[1:]:
        row = t.loc[Run(r).name]
        for s in ('valid', 'eval'):   # the same photos and labels as the runs' own scores, so the difference is theirs
            assert row[f'{s}_macro_f1_diff'] == pytest.approx(row[f'{s}_macro_f1'] - t.loc[base, f'{s}_macro_f1'], abs=1e-9)
            assert row[f'{s}_macro_f1_diff_lo'] <= row[f'{s}_macro_f1_diff'] <= row[f'{s}_macro_f1_diff_hi']
    r = module('runs', *tiny_runs[1:], '--against', tiny_runs[0], '--csv', tmp_path/'t.csv', cwd=tmp_path)
    assert set(cols) <= set(pd.read_csv(tmp_path/'t.csv').columns)
    r = module('runs', *tiny_runs, '--against', tmp_path, cwd=tmp_path, check=False)
    assert r.returncode == 2 and 'not a finished run to compare against (not a run)' in r.stderr


def test_missing_files_are_named_with_what_the_state_means(runs_dir, sample):
    ev = read_eval(sample)
    with pytest.raises(FileNotFoundError, match='the run failed: DataError: a bad photo'): run_probs(runs_dir/'failed', ev)
    with pytest.raises(FileNotFoundError, match='--resume .*unfinished completes it'): run_probs(runs_dir/'unfinished', ev)
    with pytest.raises(FileNotFoundError, match='not a run folder'): run_probs(runs_dir/'notes', ev)


def test_a_tampered_card_cannot_steer_loading(tiny_runs, tmp_path, sample):
    run = Run(shutil.copytree(tiny_runs[0], tmp_path/'run'))
    card = run.read_json('card')
    predict = lambda: module('predict', run.path, '--out', tmp_path/'s.csv', cwd=tmp_path, check=False)
    for weights in ('/etc/passwd', '../model.safetensors', 'export.pkl'):
        run.write_json('card', {**card, 'weights': weights})
        r = predict()
        assert r.returncode == 2 and 'a card may not point elsewhere' in r.stderr, r.stderr
    run.write_json('card', {**card, 'arch': 'hf-hub:timm/resnet18.a1_in1k'})
    r = predict()
    assert r.returncode == 2 and 'not a hub or file path' in r.stderr
    run.file('card').write_text('{"arch": ')
    r = predict()
    assert r.returncode == 2 and 'model.json: damaged' in r.stderr
    assert not (tmp_path/'s.csv').exists()


def test_unexpected_errors_are_one_line_with_a_log(tiny_runs, tmp_path):
    run = Run(shutil.copytree(tiny_runs[0], tmp_path/'run'))
    run.file('weights').write_bytes(b'not safetensors')
    r = module('predict', run.path, '--out', tmp_path/'s.csv', cwd=tmp_path, check=False)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1 and last.startswith('error: ') and 'traceback in ' in last and 'Traceback' not in r.stderr
    log = Path(last.split('traceback in ')[1].split(';')[0])
    assert 'Traceback' in log.read_text()
    r = module('predict', run.path, '--out', tmp_path/'s.csv', '--debug', 'true', cwd=tmp_path, check=False)
    assert 'Traceback' in r.stderr
