"The training CLI end to end on the sample: run folders, config precedence, resume after a kill, bad paths."
import json, os, signal, subprocess, sys, time
from multiprocessing import Pool
from pathlib import Path
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from mask_fastai.train import new_run_dir, resolve_config, run_dls, run_frame, run_learner

TINY = ['--arch', 'test_efficientnet', '--pretrained', 'false', '--size', '48', '--bs', '16',
        '--sample-people', '36', '--num-workers', '0', '--n-folds', '3']


def cli(*args, cwd, check=True, **kw):
    "Run `python -m mask_fastai.train` with `args` in `cwd`"
    r = subprocess.run([sys.executable, '-m', 'mask_fastai.train', *map(str, args)], cwd=cwd, capture_output=True, text=True, **kw)
    if check and r.returncode: raise AssertionError(f'train failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}')
    return r


def only_run(out):
    runs = [p for p in Path(out).iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def test_cli_end_to_end_writes_a_complete_run(sample, tmp_path):
    r = cli(*TINY, '--epochs', '2', '--multitask', 'true', '--mixup', '0.4', '--halfmix', '0.5', '--loss', 'focal',
            '--class-weighted', 'true', '--out', tmp_path/'runs', cwd=tmp_path)
    run = only_run(tmp_path/'runs')
    assert f'run {run} |' in r.stdout.splitlines()[-1] and 'dev-eval macro F1' in r.stdout
    for f in ('config.json', 'model.safetensors', 'model.json', 'export.pkl', 'confusion_matrix.png', 'oof.csv',
              'eval_probs.csv', 'submission.csv', 'metrics_unfrozen.csv', 'summary.json'):
        assert (run/f).stat().st_size > 0, f
    card = json.loads((run/'model.json').read_text())
    assert card['multitask'] and card['label_mode'] == 'multitask' and len(card['classes']) == 18 and card['size'] == [48, 48]
    assert len(pd.read_csv(run/'metrics_unfrozen.csv')) == 2
    oof = pd.read_csv(run/'oof.csv', dtype={'id': str})
    assert oof.fold.unique().tolist() == [0] and abs(oof.filter(regex=r'^p\d+$').sum(axis=1) - 1).max() < 1e-4
    info = pd.read_csv(sample/'eval'/'info.csv')
    sub = pd.read_csv(run/'submission.csv')
    assert sub.ImageID.tolist() == info.ImageID.tolist() and sub.ans.between(0, 17).all()
    summary = json.loads((run/'summary.json').read_text())
    assert 0 <= summary['eval']['macro_f1'] <= 1 and json.loads((run/'config.json').read_text())['mixup'] == 0.4


def test_config_file_sets_defaults_and_flags_override(sample, tmp_path):
    (tmp_path/'c.yaml').write_text('epochs: 1\nbs: 8\nlr: 0.01\nmethod: pad\n')
    cli(*TINY, '--config', tmp_path/'c.yaml', '--out', tmp_path/'runs', '--method', 'crop', cwd=tmp_path)
    cfg = json.loads((only_run(tmp_path/'runs')/'config.json').read_text())
    assert (cfg['epochs'], cfg['lr'], cfg['method']) == (1, 0.01, 'crop')   # file value, file value, flag over file
    assert cfg['bs'] == 16                                                  # flag (in TINY) over file
    assert resolve_config(tmp_path/'c.yaml')['bs'] == 8


def test_resume_continues_a_killed_run(sample, tmp_path):
    args = [*TINY, '--epochs', '6', '--size', '64', '--out', tmp_path/'runs']
    p = subprocess.Popen([sys.executable, '-m', 'mask_fastai.train', *map(str, args)], cwd=tmp_path,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, run = time.time() + 300, None
    while time.time() < deadline and p.poll() is None:
        runs = list((tmp_path/'runs').glob('*/state.json'))
        if runs and json.loads(runs[0].read_text() or '{}').get('epoch', -1) >= 1: run = runs[0].parent; break
        time.sleep(0.05)
    assert run is not None and p.poll() is None, 'the run ended before it could be killed'
    p.send_signal(signal.SIGKILL); p.wait()
    assert not (run/'summary.json').exists()
    done = json.loads((run/'state.json').read_text())['epoch']
    assert done < 5
    cli('--resume', run, cwd=tmp_path)
    log = pd.read_csv(run/'metrics_unfrozen.csv')
    assert log.epoch.tolist() == list(range(6)), log      # epochs before the kill kept, the rest appended once
    assert (run/'summary.json').exists() and (run/'submission.csv').exists()
    assert len([p for p in (tmp_path/'runs').iterdir()]) == 1


def test_runs_never_share_a_folder(tmp_path):
    with Pool(4) as pool: dirs = pool.starmap(new_run_dir, [(tmp_path, 'same')]*16)
    assert len(set(dirs)) == 16 and all(Path(d).is_dir() for d in dirs)


def test_missing_dataset_is_a_clear_error(tmp_path):
    r = cli('--data', tmp_path/'nope', '--out', tmp_path/'runs', cwd=tmp_path, check=False)
    assert r.returncode != 0 and f"{tmp_path/'nope'}: dataset folder not found" in r.stderr
    assert not (tmp_path/'runs').exists() or not any((tmp_path/'runs').iterdir())


def test_unavailable_pretrained_weights_say_how_to_get_them(sample, tmp_path):
    r = cli('--arch', 'convnext_atto', '--sample-people', '36', '--out', tmp_path/'runs', cwd=tmp_path, check=False)
    assert r.returncode != 0 and '--weights FILE' in r.stderr and '--pretrained false' in r.stderr


def test_folds_all_merges_out_of_fold_predictions(sample, tmp_path):
    r = cli(*TINY, '--epochs', '1', '--folds', 'all', '--out', tmp_path/'runs', cwd=tmp_path)
    run = only_run(tmp_path/'runs')
    oof = pd.read_csv(run/'oof.csv', dtype={'id': str})
    assert sorted(oof.fold.unique()) == [0, 1, 2] and len(oof) == 36*7 and oof.path.is_unique
    assert 'out-of-fold macro F1' in r.stdout and (run/'submission.csv').exists()
    assert all((run/f'fold{k}'/'model.safetensors').exists() for k in range(3))


def test_wandb_offline_needs_no_login(sample, tmp_path):
    env = {**os.environ, 'WANDB_MODE': 'offline', 'WANDB_SILENT': 'true'}
    env.pop('WANDB_API_KEY', None)
    cli(*TINY, '--epochs', '1', '--wandb', 'true', '--out', tmp_path/'runs', cwd=tmp_path, env=env)
    run = only_run(tmp_path/'runs')
    assert list((run/'wandb').glob('offline-run-*')), 'wandb wrote no offline run'


def test_other_training_options_run(sample, tmp_path):
    cli(*TINY, '--epochs', '2', '--cutmix', '1.0', '--accum', '2', '--early-stop', '1', '--oversample', 'class',
        '--opt', 'sgd', '--loss', 'softf1', '--smoothing', '0.1', '--lin-ftrs', '32', '--xavier', 'true',
        '--out', tmp_path/'runs', cwd=tmp_path)
    run = only_run(tmp_path/'runs')
    assert 1 <= len(pd.read_csv(run/'metrics_unfrozen.csv')) <= 2 and (run/'submission.csv').exists()


def test_frozen_epochs_come_first_with_pretrained_weights(sample, tmp_path):
    small = ['--size', '48', '--bs', '16', '--sample-people', '36', '--num-workers', '0', '--n-folds', '3', '--freeze-epochs', '1']
    cli(*small, '--epochs', '1', '--out', tmp_path/'runs', cwd=tmp_path)
    run = only_run(tmp_path/'runs')
    assert len(pd.read_csv(run/'metrics_frozen.csv')) == 1 and len(pd.read_csv(run/'metrics_unfrozen.csv')) == 1
    cli(*small, '--epochs', '0', '--out', tmp_path/'frozen_only', cwd=tmp_path)
    cfg = resolve_config(size=48, bs=16, sample_people=36, num_workers=0, n_folds=3)
    fresh = run_learner(cfg, run_dls(cfg, run_frame(cfg), 0)).model.state_dict()   # the packaged pretrained weights
    convs = [k for k, v in fresh.items() if k.startswith('0.') and v.ndim == 4]
    body_kept = lambda r: all(torch.equal(load_file(str(r/'model.safetensors'))[k], fresh[k]) for k in convs)
    assert convs and body_kept(only_run(tmp_path/'frozen_only')) and not body_kept(run)


def test_lr_find_saves_its_plot_and_uses_its_suggestion(sample, tmp_path):
    cli(*TINY, '--epochs', '1', '--lr-find', 'true', '--out', tmp_path/'runs', cwd=tmp_path)
    run = only_run(tmp_path/'runs')
    assert (run/'lr_find.png').stat().st_size > 0
    assert json.loads((run/'config.json').read_text())['lr'] != 2e-3
