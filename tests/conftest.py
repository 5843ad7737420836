import os, shutil, tempfile
from pathlib import Path
import pytest

# keep every derived file of the test run (image caches, converted weights, samples) in one throwaway folder
os.environ.setdefault('MASK_FASTAI_CACHE', tempfile.mkdtemp(prefix='mask_fastai_test_cache_'))
os.environ.setdefault('WANDB_MODE', 'disabled')

from mask_fastai.sample import sample_data


@pytest.fixture(scope='session')
def sample():
    "A small drawn dataset in the competition layout, shared read-only by the tests"
    return sample_data(n_people=36)   # what the CLI builds for --sample-people 36


@pytest.fixture
def sample_copy(sample, tmp_path):
    "A private copy of the sample that a test may damage"
    return Path(shutil.copytree(sample, tmp_path/'data'))
