"The training CLI end to end on the sample: run folders, config precedence, resume after a kill, bad paths and settings."
import json, os, signal, subprocess, sys, time
from multiprocessing import Pool
from pathlib import Path
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from mask_fastai.settings import resolve_config
from mask_fastai.runs import Run, new_run, config_frame
from mask_fastai.train import config_dls, config_learner, choose_precision, device_capability
from mask_fastai.inference import score_submission
from conftest import TINY, TINY_FLAGS, module, only_run


def cli(*args, cwd, check=True, **kw): return module('train', *args, cwd=cwd, check=check, **kw)


def test_cli_end_to_end_writes_a_complete_run(sample, tmp_path):
    r = cli(*TINY_FLAGS, '--epochs', '2', '--multitask', 'true', '--mixup', '0.4', '--halfmix', '0.5', '--loss', 'focal',
            '--class-weighted', 'true', '--tta', 'true', '--out', tmp_path/'runs', cwd=tmp_path)
    run = Run(only_run(tmp_path/'runs'))
    assert f'run {run.path} |' in r.stdout.splitlines()[-1] and 'dev-eval macro F1' in r.stdout
    for key in ('config', 'weights', 'card', 'export', 'confusion', 'oof', 'eval_probs', 'submission', 'summary'):
        assert run.file(key).stat().st_size > 0, key
    assert not run.checkpoint_dir().exists() and not run.has('state')      # checkpoints go once the run has finished
    card = run.card()
    assert card['precision'] == choose_precision('auto', device_capability())   # fp32 on a CPU
    assert card['multitask'] and card['label_mode'] == 'multitask' and len(card['classes']) == 18 and card['size'] == [48, 48]
    assert len(pd.read_csv(run.metrics_file('unfrozen'))) == 2
    oof = run.read_probs('oof')
    assert oof.fold.unique().tolist() == [0] and abs(oof.filter(regex=r'^p\d+$').sum(axis=1) - 1).max() < 1e-4
    info = pd.read_csv(sample/'eval'/'info.csv')
    sub = pd.read_csv(run.file('submission'))
    assert sub.ImageID.tolist() == info.ImageID.tolist() and sub.ans.between(0, 17).all()
    cfg = run.config()
    assert (cfg['mixup'], cfg['tta'], cfg['loss'], cfg['multitask']) == (0.4, True, 'focal', True)
    answers = pd.read_csv(sample/'eval'/'answers.csv', dtype={'ImageID': str})
    assert run.read_json('summary')['eval']['macro_f1'] == pytest.approx(score_submission(sub, answers)['macro_f1'])


def test_config_file_sets_defaults_and_flags_override(sample_copy, tmp_path):
    bad = sorted((sample_copy/'train'/'images').iterdir())[3]/'mask4.jpg'
    bad.write_bytes(bad.read_bytes()[:1500])                                 # a truncated photo, left out by on_error: skip
    (tmp_path/'c.yaml').write_text('epochs: 1\nbs: 8\nlr: 0.01\nmethod: pad\non_error: skip\n')
    r = cli(*TINY_FLAGS, '--data', sample_copy, '--config', tmp_path/'c.yaml', '--out', tmp_path/'runs', '--method', 'crop', cwd=tmp_path)
    assert f'{bad}: truncated JPEG' in r.stderr and 'skipped' in r.stderr
    cfg = Run(only_run(tmp_path/'runs')).config()
    assert cfg['on_error'] == 'skip' and cfg['data'] == str(sample_copy.resolve())
    assert (cfg['epochs'], cfg['lr'], cfg['method']) == (1, 0.01, 'crop')   # file value, file value, flag over file
    assert cfg['bs'] == 16                                                  # flag (in TINY_FLAGS) over file
    assert resolve_config(tmp_path/'c.yaml')['bs'] == 8


def test_resume_continues_a_killed_run(sample, tmp_path):
    args = [*TINY_FLAGS, '--epochs', '6', '--size', '64', '--ema', '0.99', '--keep-checkpoints', 'true', '--out', tmp_path/'runs']
    p = subprocess.Popen([sys.executable, '-m', 'mask_fastai.train', *map(str, args)], cwd=tmp_path,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, run = time.time() + 300, None
    while time.time() < deadline and p.poll() is None:
        states = list((tmp_path/'runs').glob('*/state.json'))
        if states and json.loads(states[0].read_text() or '{}').get('epoch', -1) >= 1: run = Run(states[0].parent); break
        time.sleep(0.05)
    assert run is not None and p.poll() is None, 'the run ended before it could be killed'
    p.send_signal(signal.SIGKILL); p.wait()
    assert run.status == 'unfinished'
    done = run.read_json('state')['epoch']
    assert done < 5
    r = cli('--resume', run.path, cwd=tmp_path)
    assert 'unreadable' not in r.stderr                          # continued from the checkpoint, not from the start
    log = pd.read_csv(run.metrics_file('unfrozen'))
    assert log.epoch.tolist() == list(range(6)), log      # epochs before the kill kept, the rest appended once
    assert run.status == 'finished' and run.has('submission')
    assert len(list((tmp_path/'runs').iterdir())) == 1
    df = config_frame(resolve_config(**TINY))
    steps = torch.load(run.checkpoint_dir()/'ema.pth', weights_only=True)['steps']
    assert steps == 6*((df.fold != 0).sum()//16)                 # the average went on from its saved steps, not from zero
    summary = run.file('summary').read_bytes()
    r = cli('--resume', run.path, cwd=tmp_path)            # a finished run is left as it is
    assert run.file('summary').read_bytes() == summary and 'valid macro F1' in r.stdout
    r = cli('--resume', run.path, '--epochs', '9', cwd=tmp_path, check=False)
    assert r.returncode == 2 and '--resume takes no other settings' in r.stderr


def test_runs_never_share_a_folder(tmp_path):
    with Pool(4) as pool: runs = pool.starmap(new_run, [(tmp_path, 'same')]*16)
    assert len({r.path for r in runs}) == 16 and all(r.path.is_dir() for r in runs)


def test_missing_dataset_is_a_clear_error(tmp_path):
    r = cli('--data', tmp_path/'nope', '--out', tmp_path/'runs', cwd=tmp_path, check=False)
    assert r.returncode == 2 and f"{tmp_path/'nope'}: dataset folder not found" in r.stderr
    assert not (tmp_path/'runs').exists() or not any((tmp_path/'runs').iterdir())


def test_unavailable_pretrained_weights_say_how_to_get_them(sample, tmp_path):
    r = cli('--arch', 'convnext_atto', '--sample-people', '36', '--out', tmp_path/'runs', cwd=tmp_path, check=False)
    assert r.returncode == 2 and '--weights FILE' in r.stderr and '--pretrained false' in r.stderr
    assert not (tmp_path/'runs').exists()                  # refused before a run folder was made


@pytest.mark.parametrize('args, message', [
    (['--epochs', '0'], 'nothing would be trained'),
    (['--lr', '-1'], "argument --lr: must be > 0 and <= 10, got '-1'"),
    (['--bs', '0'], "argument --bs: must be >= 1, got '0'"),
    (['--size', '0'], "argument --size: must be >= 16 and <= 2048, got '0'"),
    (['--epochs', 'two'], "argument --epochs: expected a whole number >= 0, got 'two'"),
    (['--folds', 'all', '--fold', '2'], '--fold and --folds all exclude each other'),
    (['--fold', '3'], 'not a fold of --n-folds 3'),
    (['--opt', 'lamb'], 'expected one of adamw, adam, sgd'),
    (['--oversample', 'people'], 'expected one of class, age'),
    (['--arch', 'hf-hub:timm/resnet18'], 'not a hub or file path'),
    (['--name', '../../escape'], 'plain folder name'),
    (['--age-cuts', '60,30'], 'two increasing ages'),
    (['--tta', 'maybe'], "expected true or false, got 'maybe'"),
    (['--on-error', 'ignore'], 'expected one of raise, skip'),
    (['--precision', 'fp16'], 'needs a CUDA GPU'),
    (['--multitask', 'false', '--age-head', 'years'], '--age-head years needs the multi-task head'),
    (['--folds', 'all', '--budget', '0.2'], 'each of the 3 folds of --folds all under 0.1 minutes'),
    (['--budget', '0'], 'must be >= 0.1'),
])
def test_bad_settings_are_refused_before_any_work(tmp_path, args, message):
    r = cli('--n-folds', '3', *args, '--out', tmp_path/'runs', cwd=tmp_path, check=False)
    assert r.returncode == 2 and message in r.stderr and 'Traceback' not in r.stderr, r.stderr
    assert not (tmp_path/'runs').exists()


@pytest.mark.parametrize('name, text, message', [
    ('c.yaml', 'epochs: 2\nbs: two\n', 'c.yaml:2: bs: expected a whole number >= 1'),
    ('c.yaml', 'epochs: [2\n', 'c.yaml:2: YAML syntax error'),
    ('c.yaml', 'epoch: 2\n', 'c.yaml:1: epoch: unknown setting'),
    ('c.json', '{"epochs": 2,,}', 'c.json:1: JSON syntax error'),
    ('c.json', '[1, 2]', 'a config file holds a mapping'),
])
def test_bad_config_files_name_the_file_and_line(tmp_path, name, text, message):
    (tmp_path/name).write_text(text)
    r = cli('--config', tmp_path/name, '--out', tmp_path/'runs', cwd=tmp_path, check=False)
    assert r.returncode == 2 and message in r.stderr and 'Traceback' not in r.stderr, r.stderr
    assert not (tmp_path/'runs').exists()


def test_folds_all_merges_out_of_fold_predictions(sample, tmp_path):
    env = {**os.environ, 'WANDB_MODE': 'offline', 'WANDB_SILENT': 'true'}
    r = cli(*TINY_FLAGS, '--epochs', '1', '--folds', 'all', '--wandb', 'true', '--out', tmp_path/'runs', cwd=tmp_path, env=env)
    run = Run(only_run(tmp_path/'runs'))
    oof = run.read_probs('oof')
    assert sorted(oof.fold.unique()) == [0, 1, 2] and len(oof) == 36*7 and oof.path.is_unique
    assert 'out-of-fold macro F1' in r.stdout and run.has('submission')
    folds = run.fold_runs()
    assert [f.config()['fold'] for f in folds] == [0, 1, 2] and all(f.status == 'finished' for f in folds)
    assert run.read_json('summary')['minutes'] == pytest.approx(sum(f.read_json('summary')['minutes'] for f in folds), abs=0.02)
    from test_wandb import wandb_records                 # each fold and the merged scores are one W&B group
    runs = [next(r.run for r in wandb_records(f) if r.WhichOneof('record_type') == 'run') for f in sorted(run.path.rglob('run-*.wandb'))]
    assert sorted((w.run_group, w.job_type) for w in runs) == [(run.name, j) for j in ('fold0', 'fold1', 'fold2', 'merged')]


def test_frozen_epochs_come_first_with_pretrained_weights(sample, tmp_path):
    small = ['--size', '48', '--bs', '16', '--sample-people', '36', '--num-workers', '0', '--n-folds', '3', '--freeze-epochs', '1']
    cli(*small, '--epochs', '1', '--out', tmp_path/'runs', cwd=tmp_path)
    run = Run(only_run(tmp_path/'runs'))
    assert len(pd.read_csv(run.metrics_file('frozen'))) == 1 and len(pd.read_csv(run.metrics_file('unfrozen'))) == 1
    assert run.size_mb() < 2.2*run.file('weights').stat().st_size/2**20   # the weights and the export; no checkpoint left
    cli(*small, '--epochs', '0', '--out', tmp_path/'frozen_only', cwd=tmp_path)
    cfg = resolve_config(size=48, bs=16, sample_people=36, num_workers=0, n_folds=3)
    fresh = config_learner(cfg, config_dls(cfg, config_frame(cfg), 0)).model.state_dict()   # the packaged pretrained weights
    convs = [k for k, v in fresh.items() if k.startswith('0.') and v.ndim == 4]
    body_kept = lambda r: all(torch.equal(load_file(str(Path(r)/'model.safetensors'))[k], fresh[k]) for k in convs)
    assert convs and body_kept(only_run(tmp_path/'frozen_only')) and not body_kept(run.path)


def test_lr_find_saves_its_plot_and_uses_its_suggestion(sample, tmp_path):
    cli(*TINY_FLAGS, '--epochs', '1', '--lr-find', 'true', '--out', tmp_path/'runs', cwd=tmp_path)
    run = Run(only_run(tmp_path/'runs'))
    assert run.file('lr_find').stat().st_size > 0
    assert run.config()['lr'] != 2e-3


def test_an_empty_eval_set_is_refused_before_training(sample_copy, tmp_path):
    info = sample_copy/'eval'/'info.csv'
    info.write_text(info.read_text().splitlines()[0] + '\n')
    r = cli(*TINY_FLAGS, '--data', sample_copy, '--out', tmp_path/'runs', cwd=tmp_path, check=False)
    assert r.returncode == 2 and f'{info}: a header line but no rows' in r.stderr
    assert not (tmp_path/'runs').exists()


@pytest.mark.parametrize('head', ['years', 'dist', 'ordinal'])
def test_age_head_fits_its_cuts_and_predict_reads_them(sample, tmp_path, head):
    "--age-head years, dist or ordinal: the run reports its age error, fits the band cuts on its validation people, and predict uses the card's cuts"
    from mask_fastai.inference import run_probs
    from mask_fastai.metrics import mask_scores
    r = module('train', *TINY_FLAGS, '--epochs', 1, '--multitask', 'true', '--age-head', head, '--out', tmp_path/'runs', cwd=tmp_path)
    run = Run(only_run(tmp_path/'runs'))
    valid, card = run.read_json('summary')['valid'], run.card()
    assert 'valid age MAE' in r.stdout and 0 < valid['age_mae'] < 100
    assert card['age_head'] == head and card['band_cuts'] == valid['band_cuts'] and 20 <= card['band_cuts'][0] < card['band_cuts'][1] <= 75
    assert 'age_mae' in pd.read_csv(run.metrics_file('unfrozen')).columns
    from mask_fastai.runs import compare_runs
    assert compare_runs([run.path]).valid_age_mae.iloc[0] == valid['age_mae']
    oof = run.read_probs('oof')
    probs = run_probs(run.path, oof[['path']])
    assert abs(mask_scores(probs, oof.label.values)['macro_f1'] - valid['macro_f1']) < 1e-9   # predict reads the band as training did
    card['band_cuts'] = [20, 21]   # other cuts, other band probabilities
    run.file('card').write_text(json.dumps(card))
    moved = run_probs(run.path, oof[['path']])
    assert not torch.equal(moved, probs)


def test_budget_plans_the_epochs_it_trains(sample, tmp_path):
    "--folds all --budget: fold 0's probe plans the epochs for its share; the other fold trains them; configs, logs and summaries agree"
    module('train', *TINY_FLAGS, '--n-folds', 2, '--folds', 'all', '--budget', 0.4, '--epochs', 1, '--out', tmp_path/'runs', cwd=tmp_path)   # the plan replaces --epochs
    run = Run(only_run(tmp_path/'runs'))
    first, second = run.fold_runs()
    plan, cfg = first.read_json('summary')['budget'], first.config()
    assert plan['budget'] == 0.2 and plan['planned_epochs'] == cfg['epochs'] + cfg['freeze_epochs'] > 1
    assert plan['probe_train_img_s'] > 0 and plan['spent_minutes'] > 0
    assert second.config()['budget'] is None and 'budget' not in second.read_json('summary')   # no probe of its own
    for fold in (first, second): assert len(pd.read_csv(fold.metrics_file('unfrozen'))) == cfg['epochs'] == fold.config()['epochs'] > 1
    summary = run.read_json('summary')
    assert summary['budget']['budget'] == 0.4 and summary['budget']['planned_epochs'] == plan['planned_epochs']
    assert summary['budget']['spent_minutes'] == summary['minutes'] > plan['spent_minutes']


def test_a_fold_budget_without_room_names_the_whole_command(sample, tmp_path, monkeypatch):
    "--folds all --budget: when fold 0's share holds no epoch, the error names the command's budget and the share that failed"
    import mask_fastai.train as T
    from mask_fastai.settings import SettingError
    monkeypatch.setattr(T, 'probe_rates', lambda learn: (1., 1.))   # a photo a second: one epoch of a fold takes minutes
    with pytest.raises(SettingError, match=r'^--folds all --budget 1: fold 0 plans for its share, --budget 0.5: one epoch takes about'):
        T.train(resolve_config(out=str(tmp_path/'runs'), folds='all', budget=1, **{**TINY, 'n_folds': 2}))
    run = Run(only_run(tmp_path/'runs'))
    assert run.status == 'failed' and 'fold 0 plans for its share' in run.failure()   # the folder says why


def test_progressive_resizing_changes_the_size_between_steps(sample, tmp_path):
    "--grow-from 32,32 --grow-epochs 1: the first epoch trains on 32x32 batches, the second on 48x48, logged as one schedule"
    from fastai.callback.core import Callback
    from mask_fastai.train import train
    class Sizes(Callback):
        def __init__(self): self.fits = []
        def before_fit(self): self.fits.append(set())
        def before_batch(self): self.fits[-1].add((self.training, tuple(self.xb[0].shape[-2:])))
    sizes = Sizes()
    res = train(resolve_config(out=str(tmp_path/'runs'), epochs=2, grow_from=[32, 32], grow_epochs=1, **TINY), cbs=[sizes])
    assert sizes.fits == [{(True, (32, 32)), (False, (32, 32))}, {(True, (48, 48)), (False, (48, 48))}]
    run = Run(res['run_dir'])
    assert pd.read_csv(run.metrics_file('unfrozen')).epoch.tolist() == [0, 1] and run.card()['size'] == [48, 48]
