"The face-age teacher on a run folder: `python -m mask_fastai.teacher` fits its mix, and prediction applies it."
import json, shutil
from pathlib import Path
import numpy as np, pytest, torch
from conftest import module
from mask_fastai.runs import Run, prob_matrix, photo_cols
from mask_fastai.metrics import mask_scores
from mask_fastai.data import read_eval
from mask_fastai.losses import marginals
from mask_fastai.inference import run_probs
from mask_fastai.teacher import teacher_outputs


@pytest.fixture
def years_run(tiny_runs, tmp_path):
    "A private copy of the multi-task run, whose age head regresses years, that a test may give a teacher"
    return Path(shutil.copytree(tiny_runs[1], tmp_path/'run'))


def test_cli_fits_the_mix_on_validation(years_run, tmp_path):
    out = json.loads(module('teacher', years_run, cwd=tmp_path).stdout)[str(years_run)]
    run = Run(years_run)
    blend = run.read_json('teacher')
    assert 0 <= blend['w_age'] <= 1 and 0 <= blend['w_gender'] <= 1 and blend['cuts'][0] < blend['cuts'][1]
    assert out['valid_before'] == pytest.approx(run.read_json('summary')['valid']['macro_f1'], abs=1e-6)   # the run's own validation score
    assert out['valid'] >= out['valid_before'] - 1e-9   # weights 0 are on the grid, so the fit never scores below the run
    mixed = run.read_probs('teacher_oof')
    labels, people = mixed.label.to_numpy(), mixed.id.to_numpy()
    assert mixed.path.tolist() == run.read_probs('oof').path.tolist()   # the validation photos,
    assert mask_scores(prob_matrix(mixed), labels, groups=people)['macro_f1'] == pytest.approx(out['valid'], abs=1e-6)   # mixed as the fit scored them
    assert out['valid'] < 1
    run.write_probs('teacher_oof', torch.eye(18)[labels.tolist()], **photo_cols(mixed))   # a mix that knew every answer
    res = json.loads(module('predict', years_run, '--out', tmp_path/'sub.csv', cwd=tmp_path).stdout)
    assert res['oof']['macro_f1'] == pytest.approx(1)   # predict's out-of-fold score is the table in the folder, as the eval photos get the mix


def test_predict_mixes_in_the_teachers_gender(years_run, sample, tmp_path):
    run = Run(years_run)
    run.write_json('teacher', dict(age_line=[0., 1.], gender_line=[0., 1.], w_age=0., w_gender=1., cuts=run.card()['band_cuts']))
    ev = read_eval(sample)
    female = marginals(run_probs(years_run, ev))[1][:, 1].numpy()
    np.testing.assert_allclose(female, teacher_outputs(list(ev.path)).female.to_numpy(), atol=1e-4)
    r = module('predict', years_run, '--tta', 'true', cwd=tmp_path, check=False)
    assert r.returncode == 2 and 'without --tta' in r.stderr, r.stderr


def test_a_run_without_years_is_refused(tiny_runs, tmp_path):
    r = module('teacher', tiny_runs[0], cwd=tmp_path, check=False)
    assert r.returncode == 2 and '--age-head years' in r.stderr, r.stderr
    assert not Run(tiny_runs[0]).has('teacher')
