"Each training option has its effect on what is built or computed: checked on the learner and loaders, training only where the option acts in training."
import pytest, torch
from fastai.vision.all import GradientAccumulation, ChannelsLast, Resize, TensorImage, LightingTfm
from timm.layers import DropPath
from mask_fastai.settings import resolve_config, SettingError
from mask_fastai.runs import Run, config_frame
from mask_fastai.losses import class_weights
from mask_fastai.train import config_dls, config_learner, train_cbs, phase_fit_args, fit_recipe, HalfMix, MaskMixUp, MaskCutMix
from conftest import TINY


@pytest.fixture(scope='module')
def frame(sample): return config_frame(resolve_config(**TINY))


def build(frame, **opts):
    "The config and learner of `TINY` with `opts`, from the same random state"
    cfg = resolve_config(**{**TINY, **opts})
    torch.manual_seed(0)
    return cfg, config_learner(cfg, config_dls(cfg, frame, 0))


def linears(learn): return [m for m in learn.model[1].modules() if isinstance(m, torch.nn.Linear)]
def logits_and_targets(): return torch.tensor([[4., 1.] + [0.]*16, [0., 3.] + [1.]*16]), torch.tensor([0, 5])


def test_xavier_changes_the_head_initialisation(frame):
    w_kaiming, w_xavier = linears(build(frame)[1])[-1].weight, linears(build(frame, xavier=True)[1])[-1].weight
    bound = (6/sum(w_xavier.shape))**.5
    assert w_xavier.abs().max() <= bound + 1e-6 < w_kaiming.abs().max()


def test_drop_path_skips_residual_blocks_in_training_only(frame):
    "--drop-path gives the body timm's stochastic depth, rising block by block: a training forward varies, an evaluating one does not"
    def body_twice(**opts):
        body = build(frame, arch='tf_efficientnet_lite0', **opts)[1].model[0]   # the tiny test net has no residual blocks
        x, out = torch.randn(4, 3, 48, 48), []
        for mode in (True, False):
            body.train(mode)
            with torch.no_grad(): out.append((body(x) - body(x)).abs().max().item())
        return [m.drop_prob for m in body.modules() if isinstance(m, DropPath)], out
    rates, (train, evaluate) = body_twice(drop_path=0.3)
    assert rates == sorted(rates) and 0 < rates[0] < rates[-1] < 0.3 and train > 0.1 and evaluate == 0
    assert body_twice() == ([], [0, 0])
    with pytest.raises(SettingError, match="timm's vgg11 has no stochastic depth"): build(frame, arch='vgg11', drop_path=0.1)


def test_augmentation_options_reach_the_training_batches(frame):
    "--max-rotate, --max-zoom, --max-lighting and --saturation set fastai's augmentations; --erase adds noise rectangles after normalising and --min-scale random crops of each photo, to training batches only"
    learn = build(frame, max_rotate=25., max_zoom=1.5, max_lighting=0.4, saturation=0.3, erase=1., min_scale=0.5)[1]
    fs = learn.dls.train.after_batch.fs
    affine = {f.func.__name__: f.keywords for t in fs for f in getattr(t, 'aff_fs', [])}
    assert (affine['rotate_mat']['max_deg'], affine['zoom_mat']['max_zoom']) == (25., 1.5)
    assert [t.max_lighting for t in fs if hasattr(t, 'max_lighting')] == [0.4]
    lighting = {type(f).__name__: f.max_lighting for t in fs if isinstance(t, LightingTfm) for f in t.fs}
    assert lighting == {'_BrightnessLogit': 0.4, '_ContrastLogit': 0.4, '_SaturationLogit': 0.3}
    names = [type(t).__name__ for t in fs]
    assert names.index('Normalize') < names.index('RandomErasing')
    erase, blank = fs[names.index('RandomErasing')], lambda: TensorImage(torch.zeros(4, 3, 32, 24))   # it erases in place
    assert (erase(blank(), split_idx=0) != 0).any(dim=(1, 2, 3)).all() and (erase(blank(), split_idx=1) == 0).all()
    assert affine['crop_mat']['min_scale'] == 0.5   # resampled once with the flips, rotations and zooms
    assert learn.dls.one_batch()[0].shape == learn.dls.valid.one_batch()[0].shape   # cropped photos stretched back to the run's size
    plain = build(frame)[1].dls.train.after_batch.fs
    assert '_SaturationLogit' not in [type(f).__name__ for t in plain if isinstance(t, LightingTfm) for f in t.fs]
    assert 'RandomErasing' not in [type(t).__name__ for t in plain] and 'crop_mat' not in [f.func.__name__ for t in plain for f in getattr(t, 'aff_fs', [])]


def test_smoothing_and_loss_kind_change_the_loss_value(frame):
    x, y = logits_and_targets()
    ce, smooth = build(frame, multitask=False)[1].loss_func(x, y), build(frame, multitask=False, smoothing=0.2)[1].loss_func(x, y)
    assert smooth > ce + 0.1
    for kind in ('focal', 'softf1'):
        loss = build(frame, multitask=False, loss=kind)[1].loss_func
        assert loss.kind == kind and abs(loss(x, y) - ce) > 0.05


def test_class_weighted_uses_inverse_frequency_weights(frame):
    learn = build(frame, class_weighted=True, multitask=False)[1]
    torch.testing.assert_close(learn.loss_func.weight, torch.tensor(class_weights(learn.dls.train_ds.items.label)))
    multi = build(frame, class_weighted=True)[1]                        # the default head: weights per task
    torch.testing.assert_close(multi.loss_func.weight, torch.tensor(class_weights(multi.dls.train_ds.items.label, multitask=True)))
    assert build(frame)[1].loss_func.weight is None


def test_oversampling_changes_the_age_bands_drawn(frame):
    old = frame[frame.age_band == 2].id.unique()
    skewed = frame[(frame.age_band != 2) | frame.id.isin(old[:2])]    # few old people left
    cfg = resolve_config(**{**TINY, 'bs': 32})
    share = lambda dls: (torch.cat([b[1] for b in dls.train]) % 3 == 2).float().mean().item()
    torch.manual_seed(0)
    plain, over = share(config_dls({**cfg, 'oversample': None}, skewed, 0)), share(config_dls(cfg, skewed, 0))   # by age band, the default
    assert over > 2*plain and over > 0.2


def test_mixing_and_accumulation_callbacks(frame):
    cbs = {type(c): c for c in train_cbs(resolve_config(**TINY, mixup=0.4, cutmix=1.0, halfmix=0.5, accum=2))}
    assert cbs[MaskMixUp].distrib.concentration1.item() == pytest.approx(0.4) and cbs[MaskCutMix].distrib.concentration1.item() == 1.
    assert cbs[HalfMix].p == 0.5 and cbs[GradientAccumulation].n_acc == 32
    assert [(type(c), c.p) for c in train_cbs(resolve_config(**TINY))] == [(HalfMix, 0.5)]   # the default mixes halves in half the batches
    assert train_cbs(resolve_config(**TINY, halfmix=0)) == []


def test_ema_makes_the_average_the_runs_model(frame, tmp_path):
    "With --ema the epoch is validated and saved as the average of the weights, which becomes the model; the checkpoint keeps the raw weights"
    cfg, learn = build(frame, ema=0.9, epochs=1)
    learn.path, run = tmp_path, Run(tmp_path)
    fit_recipe(learn, cfg, run)
    average = torch.load(run.checkpoint_dir()/'ema.pth', weights_only=True)['model']
    assert all(torch.equal(v, average[k]) for k, v in learn.model.state_dict().items())
    raw = learn.load('last', with_opt=False, weights_only=True).model.state_dict()
    assert any(v.is_floating_point() and not torch.equal(v, raw[k]) for k, v in average.items())


def test_halfmix_swaps_only_the_right_half_within_a_class():
    x = torch.arange(4.)[:, None, None, None].expand(4, 3, 2, 4).clone()
    y = torch.tensor([1, 1, 2, 2])
    mix = HalfMix(p=1.)
    mix.learn = type('L', (), dict(xb=(x,), yb=(y,)))()
    torch.manual_seed(3)
    mix.before_batch()
    out = mix.learn.xb[0]
    assert torch.equal(out[..., :2], x[..., :2])
    assert set(out[:2, 0, 0, 2].tolist()) <= {0., 1.} and set(out[2:, 0, 0, 2].tolist()) <= {2., 3.}


def test_head_optimizer_and_schedule_options(frame):
    cfg, learn = build(frame, opt='sgd', lin_ftrs=[32], multitask=True, ps=0.2)
    learn.create_opt()
    assert 'mom' in learn.opt.hypers[0] and 'sqr_mom' not in learn.opt.hypers[0]
    assert any(m.out_features == 32 for m in linears(learn))
    assert learn.model(learn.dls.one_batch()[0]).shape[1] == 9          # mask 3 + gender 2 + age band 3 + age in years 1
    assert learn.model[1].heads[0][-2].p == 0.2                         # the dropout before each head's last layer
    top = phase_fit_args(resolve_config(lr=1e-3, lr_mult=4), 'unfrozen')['lr_max']
    assert (top.start, top.stop) == (2.5e-4, 1e-3)


def test_size_method_and_channels_last(frame):
    learn = build(frame, size='40,32', method='pad', channels_last=False)[1]
    assert learn.dls.one_batch()[0].shape[-2:] == (40, 32)
    resize = [t for t in learn.dls.valid.after_item.fs if isinstance(t, Resize)][0]
    assert resize.method == 'pad'
    assert not any(isinstance(c, ChannelsLast) for c in learn.cbs)
    assert any(isinstance(c, ChannelsLast) for c in build(frame)[1].cbs)


def test_torch_compile_follows_the_device_unless_asked(frame):
    "auto leaves the model eager on a CPU; true compiles it in place, its weights keeping their names"
    from mask_fastai.train import uncompiled
    eager, compiled = build(frame)[1].model, build(frame, torch_compile='true')[1].model
    assert getattr(eager, '_compiled_call_impl', None) is None and compiled._compiled_call_impl is not None
    assert list(compiled.state_dict()) == list(eager.state_dict())
    with uncompiled(compiled): assert compiled._compiled_call_impl is None
    assert compiled._compiled_call_impl is not None


@pytest.mark.parametrize('keep', [True, False])
def test_train_keeps_freed_memory_only_when_set(sample, tmp_path, monkeypatch, keep):
    "--keep-memory: train() has malloc keep freed memory before any training, and leaves it alone when false"
    import mask_fastai.train as T
    calls = []
    monkeypatch.setattr(T, 'keep_freed_memory', lambda: calls.append('kept'))
    monkeypatch.setattr(T, '_complete', lambda run, *a, **kw: calls.append('trained'))   # the training itself is tested elsewhere
    T.train(resolve_config(**TINY, out=str(tmp_path/'runs'), keep_memory=keep))
    assert calls == (['kept', 'trained'] if keep else ['trained'])
