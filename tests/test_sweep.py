"Sweeps: two workers share one SQLite study, trials are ordinary run folders, and a study resumes."
import os, subprocess, sys
import pytest
from mask_fastai.runs import Run
from conftest import TINY, module

optuna = pytest.importorskip('optuna')

SPACE = 'fixed: {%s, epochs: 1, wandb: true}\nsearch:\n  lr: {float: [1.0e-3, 2.0e-2], log: true}\n  halfmix: {choice: [0.0, 0.5]}\n' % ', '.join(
    f'{k}: {str(v).lower() if isinstance(v, bool) else v}' for k, v in TINY.items())


def test_two_workers_share_one_study_without_losing_or_repeating_a_trial(sample, tmp_path):
    (tmp_path/'space.yaml').write_text(SPACE)
    url = f"sqlite:///{tmp_path/'study.db'}"
    args = [sys.executable, '-m', 'mask_fastai.sweep', 'space.yaml', '--trials', '2', '--storage', url, '--out', 'runs']
    env = {**os.environ, 'WANDB_MODE': 'offline', 'WANDB_SILENT': 'true'}
    workers = [subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [w.communicate(timeout=600) for w in workers]
    assert all(w.returncode == 0 for w in workers), outs
    trials = optuna.load_study(study_name='space', storage=url).trials
    assert len(trials) >= 2 and len({t.number for t in trials}) == len(trials)        # each trial once
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    runs = [Run(t.user_attrs['run_dir']) for t in done]
    assert len({r.path for r in runs}) == len(done) and all(r.status == 'finished' for r in runs)
    assert all(r.config()['lr'] == pytest.approx(t.params['lr']) and r.config()['halfmix'] == t.params['halfmix'] for r, t in zip(runs, done))
    assert all(t.value == pytest.approx(r.read_json('summary')['valid']['macro_f1']) for r, t in zip(runs, done))
    from test_wandb import wandb_records                 # the trials are one W&B group
    groups = {next(x.run.run_group for x in wandb_records(f) if x.WhichOneof('record_type') == 'run') for f in (tmp_path/'runs').rglob('run-*.wandb')}
    assert groups == {'sweep-space'}
    n = len(trials)
    r = module('sweep', 'space.yaml', '--trials', n + 1, '--storage', url, '--out', 'runs', cwd=tmp_path, env=env)   # resumed: one trial more
    assert len(optuna.load_study(study_name='space', storage=url).trials) == n + 1
    assert 'valid_macro_f1' in r.stdout
