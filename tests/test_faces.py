"Face crops end to end on drawn competition-sized photos: training, the run's record, prediction of bare photos, the demo's HTTP API"
import json, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import numpy as np, pandas as pd, pytest
from PIL import Image
from conftest import module, in_process, TINY_FLAGS
from mask_fastai.sample import draw_scene
from mask_fastai.runs import Run


def test_crop_is_recorded_counted_and_repeated_in_prediction(crop_run, scenes, tmp_path):
    run = Run(crop_run)
    card, summary = run.card(), run.read_json('summary')
    assert set(card['crop']) == {'detector', 'margin', 'prior_box'} and card['crop']['margin'] == .5
    train_counts, eval_counts = summary['faces']['train'], summary['faces']['eval']
    assert sum(train_counts.values()) == 12*7 and sum(eval_counts.values()) == 2*7
    assert train_counts['found'] > 0 and train_counts['person'] > 0, train_counts   # masked drawn faces borrow their person's box
    assert eval_counts['person'] == 0   # eval photos have no person to borrow from
    # a folder of bare photos: each is cut to a face-sized box, found or the prior
    out = tmp_path/'preds.csv'
    res = json.loads(module('predict', crop_run, '--images', scenes/'eval'/'images', '--out', out, cwd=tmp_path).stdout)
    table = pd.read_csv(out)
    assert res['faces'] == table.face.value_counts().to_dict() and set(table.face) <= {'found', 'prior'}
    boxes = np.array([eval(b) for b in table.crop])
    area = (boxes[:, 2] - boxes[:, 0])*(boxes[:, 3] - boxes[:, 1])/(384*512)
    assert (area < .3).all(), area   # the face and its margin, not the photo
    # the exported learner cuts a bare photo the same way: its probabilities match predict's, up to the cache's JPEG copy
    from fastai.learner import load_learner
    learn = load_learner(run.file('export'))
    photo = Image.open(table.photo[0])
    with learn.no_bar(): probs = learn.predict(photo)[2].numpy()
    np.testing.assert_allclose(probs, table.loc[0, [f'p{k}' for k in range(18)]].to_numpy(float), atol=.02)


def test_crop_without_the_detector_says_how_to_install_it(sample, tmp_path, monkeypatch):
    from mask_fastai.faces import face_detector
    face_detector.cache_clear()
    monkeypatch.setitem(sys.modules, 'facenet_pytorch', None)   # as if it were not installed
    r = in_process('train', *TINY_FLAGS, '--out', tmp_path, '--crop', 'face')
    face_detector.cache_clear()
    assert r.returncode == 2 and 'pip install --no-deps facenet-pytorch' in r.stderr, r.stderr
    assert not list(tmp_path.iterdir()), 'no run folder for a run that cannot start'


def _free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def test_demo_serves_predictions_over_http(crop_run, tmp_path):
    pytest.importorskip('gradio')
    from gradio_client import Client, handle_file
    port = _free_port()
    server = subprocess.Popen([sys.executable, '-m', 'mask_fastai.demo', crop_run, '--port', str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url, start = f'http://127.0.0.1:{port}/', time.time()
        while True:
            assert server.poll() is None, server.stdout.read()
            try: urllib.request.urlopen(url, timeout=2); break
            except OSError:
                assert time.time() - start < 120, 'the demo did not answer within 2 minutes'
                time.sleep(1)
        photo = tmp_path/'bare.jpg'
        draw_scene(0, 1, 2, np.random.default_rng(5)).save(photo)
        shown, mask, gender, age, note = Client(url, verbose=False).predict(handle_file(str(photo)), api_name='/predict')
        assert Image.open(shown).size == (384, 512)
        from mask_fastai.inference import predict_photos
        from mask_fastai.demo import head_probs
        expected = predict_photos(crop_run, [photo]).iloc[0]
        assert f'**{expected.class_name}**' in note
        for got, want in zip((mask, gender, age), head_probs(expected)):   # what the page shows is what predict says (of the upload, re-encoded by gradio)
            assert {c['label']: pytest.approx(c['confidence'], abs=5e-3) for c in got['confidences']} == want
    finally:
        server.terminate(); server.wait(20)
