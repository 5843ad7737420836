"W&B: an offline run holds the whole experiment, read back from its own records, and logging changes nothing else."
import os
from pathlib import Path
import pandas as pd
import pytest
from mask_fastai.runs import Run
from conftest import TINY_FLAGS, module, only_run

wandb = pytest.importorskip('wandb')
from wandb.proto import wandb_internal_pb2


def wandb_records(fn):
    "The records of an offline run's .wandb file, parsed with wandb's own protobuf messages (the file is a LevelDB-style log)"
    data, pos, out, buf = Path(fn).read_bytes(), 7, [], b''   # after the ':W&B' header
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7: pos += left; continue                      # a block's tail too short for a record header is padding
        n, kind = int.from_bytes(data[pos+4:pos+6], 'little'), data[pos+6]
        if kind == 0 and n == 0: break
        buf += data[pos+7:pos+7+n]; pos += 7 + n
        if kind in (1, 4):                                      # a full record, or the last piece of one
            r = wandb_internal_pb2.Record(); r.ParseFromString(buf); out.append(r); buf = b''
    return out


def items(r, kind):
    "A record's items as {key: JSON text}"
    field = dict(history=r.history.item, summary=r.summary.update, config=r.run.config.update)[kind]
    return {i.key or '/'.join(i.nested_key): i.value_json for i in field}


@pytest.fixture
def offline_env():
    env = {**os.environ, 'WANDB_MODE': 'offline', 'WANDB_SILENT': 'true'}
    env.pop('WANDB_API_KEY', None)
    return env


def test_offline_run_holds_the_experiment_and_changes_nothing(sample, tmp_path, offline_env):
    args = [*TINY_FLAGS, '--epochs', '2', '--mixup', '0.4']
    module('train', *args, '--out', tmp_path/'plain', cwd=tmp_path, env=offline_env)
    r = module('train', *args, '--wandb', 'true', '--wandb-tags', 'mixup,tiny', '--out', tmp_path/'logged', cwd=tmp_path, env=offline_env)
    assert 'could not log config' not in r.stdout + r.stderr
    plain, logged = Run(only_run(tmp_path/'plain')), Run(only_run(tmp_path/'logged'))
    same = lambda run: pd.read_csv(run.metrics_file('unfrozen')).drop(columns='time')
    pd.testing.assert_frame_equal(same(plain), same(logged))                    # the same seed, the same training
    assert plain.read_json('summary')['eval'] == logged.read_json('summary')['eval']
    files = list((logged.path/'wandb').glob('offline-run-*/run-*.wandb'))
    assert len(files) == 1
    records = wandb_records(files[0])
    run_record = next(r for r in records if r.WhichOneof('record_type') == 'run')
    config = items(run_record, 'config')
    assert config['mixup'] == '0.4' and config['run_dir'] == f'"{logged.path}"' and list(run_record.run.tags) == ['mixup', 'tiny']
    history = [items(r, 'history') for r in records if r.WhichOneof('record_type') == 'history']
    assert len([h for h in history if 'macro_f1' in h]) == 2                    # one per epoch
    assert {'confusion_matrix/_type', 'top_losses/_type'} <= set().union(*history)
    summary = {}
    for r in records:
        if r.WhichOneof('record_type') == 'summary': summary.update(items(r, 'summary'))
    assert float(summary['final/eval/macro_f1']) == pytest.approx(logged.read_json('summary')['eval']['macro_f1'])
    assert list((files[0].parent/'files'/'media'/'images').glob('top_losses_*.png'))


def test_missing_wandb_is_a_clear_error_before_the_run_folder(tmp_path, offline_env):
    (tmp_path/'shadow').mkdir()
    (tmp_path/'shadow'/'wandb.py').write_text("raise ImportError('No module named wandb')\n")
    env = {**offline_env, 'PYTHONPATH': str(tmp_path/'shadow')}
    r = module('train', *TINY_FLAGS, '--wandb', 'true', '--out', tmp_path/'runs', cwd=tmp_path, env=env, check=False)
    assert r.returncode == 2 and "pip install 'mask_fastai[wandb]'" in r.stderr and 'Traceback' not in r.stderr
    assert not (tmp_path/'runs').exists()
