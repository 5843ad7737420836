import io, os, runpy, shutil, subprocess, sys, tempfile, traceback, warnings
from contextlib import redirect_stdout, redirect_stderr
from pathlib import Path
import pytest

# keep every derived file of the test run (image caches, converted weights, samples, logs) in one throwaway folder
os.environ.setdefault('MASK_FASTAI_CACHE', tempfile.mkdtemp(prefix='mask_fastai_test_cache_'))
os.environ.setdefault('WANDB_MODE', 'disabled')

from mask_fastai.sample import sample_data
from mask_fastai.settings import resolve_config

# a tiny network on the 36-person sample: the settings of most trained fixtures and CLI tests
TINY = dict(arch='test_efficientnet', pretrained=False, size=48, bs=16, sample_people=36, num_workers=0, n_folds=3)
TINY_FLAGS = [a for k, v in TINY.items() for a in (f"--{k.replace('_', '-')}", str(v).lower() if isinstance(v, bool) else str(v))]


def module(name, *args, cwd, check=True, env=None):
    "Run `python -m mask_fastai.<name> args` in `cwd`: in this process, or in a new interpreter where `env` sets its environment"
    args = list(map(str, args))
    if env is None: r = in_process(name, *args, cwd=cwd)
    else: r = subprocess.run([sys.executable, '-m', f'mask_fastai.{name}', *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and r.returncode: raise AssertionError(f'{name} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}')
    return r


def in_process(name, *args, cwd='.'):
    "What `python -m mask_fastai.<name> args` in `cwd` prints and returns, run through the module's own entry without a new interpreter (whose imports cost seconds)"
    out, err, argv, here = io.StringIO(), io.StringIO(), sys.argv, os.getcwd()
    cmd = sys.argv = [f'mask_fastai.{name}', *map(str, args)]
    os.chdir(cwd)
    try:
        with redirect_stdout(out), redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter('default')   # as a fresh interpreter shows them: on stderr, once each
            warnings.filterwarnings('ignore', '.*found in sys.modules', RuntimeWarning)   # the module is imported already, as intended
            warnings.showwarning = lambda msg, cat, file, line, f=None, text=None: err.write(warnings.formatwarning(msg, cat, file, line, text))
            try: runpy.run_module(f'mask_fastai.{name}', run_name='__main__'); code = 0
            except SystemExit as e:
                if isinstance(e.code, str): print(e.code, file=err)
                code = e.code if isinstance(e.code, int) else int(e.code is not None)
            except Exception: traceback.print_exc(file=err); code = 1   # what the interpreter does with an error nothing caught
    finally: sys.argv = argv; os.chdir(here)
    return subprocess.CompletedProcess(cmd, code, out.getvalue(), err.getvalue())


def only_run(out):
    "The one run folder under `out`"
    runs = [p for p in Path(out).iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(scope='session')
def sample():
    "A small drawn dataset in the competition layout, shared read-only by the tests"
    return sample_data(n_people=36)   # what the CLI builds for --sample-people 36


@pytest.fixture
def sample_copy(sample, tmp_path):
    "A private copy of the sample that a test may damage"
    return Path(shutil.copytree(sample, tmp_path/'data'))


@pytest.fixture(scope='session')
def tiny_runs(sample, tmp_path_factory):
    "Three quick runs on the shared sample and folds, differing in seed and head, trained once for the whole session"
    from mask_fastai.train import train
    out = tmp_path_factory.mktemp('runs')
    return [train(resolve_config(out=str(out), epochs=1, seed=s, multitask=s == 2, name=f'r{s}', **TINY))['run_dir'] for s in (1, 2, 3)]


@pytest.fixture(scope='session')
def scenes():
    "A small drawn dataset of competition-sized photos (384x512) in which the face is a fifth of the width"
    return sample_data(n_people=12, n_eval=2, size=(384, 512), face_width=.2)


@pytest.fixture(scope='session')
def crop_run(scenes, tmp_path_factory):
    "A quick run trained with --crop face on `scenes`"
    from mask_fastai.train import train
    cfg = resolve_config(data=str(scenes), out=str(tmp_path_factory.mktemp('crop_runs')), epochs=1, crop='face', **{**TINY, 'sample_people': 120})
    return train(cfg)['run_dir']
