"Bad input to the dataset readers: each problem gets a clear error naming the file, or the right handling."
import re
import numpy as np, pandas as pd
import pytest
from PIL import Image
from mask_fastai.data import read_train, read_eval, DataError, profile_folds, mask_dls, open_image, ImageCache

N = 36*7


def folders(root): return sorted((root/'train'/'images').iterdir())


def test_reads_sample(sample):
    df = read_train(sample)
    assert len(df) == N and df.id.nunique() == 36
    assert set(df.columns) >= {'path', 'id', 'gender', 'race', 'age', 'mask', 'age_band', 'label'}
    assert (df.label == df['mask']*6 + df.gender*3 + df.age_band).all()


def test_truncated_jpeg_is_named(sample_copy):
    f = folders(sample_copy)[3]/'mask4.jpg'
    f.write_bytes(f.read_bytes()[:1500])
    with pytest.raises(DataError, match=f'{f}: truncated JPEG'): read_train(sample_copy)
    with pytest.warns(UserWarning, match='1 problem'): df = read_train(sample_copy, on_error='skip')
    assert len(df) == N-1 and str(f) not in set(df.path)


def test_full_check_finds_a_corrupt_body(sample_copy):
    f = folders(sample_copy)[0]/'normal.jpg'
    b = bytearray(f.read_bytes()); b[600:1400] = b'\0'*800   # header and end marker intact, scan data gone
    f.write_bytes(bytes(b[:700]) + bytes(b[-2:]))
    read_train(sample_copy, check='none')
    with pytest.raises(DataError, match='unreadable image'): read_train(sample_copy, check='full')


def test_missing_folder(sample_copy):
    import shutil
    gone = folders(sample_copy)[5]; shutil.rmtree(gone)
    with pytest.raises(DataError, match=f'{gone}: listed in .*train.csv but missing'): read_train(sample_copy)


def test_csv_without_age(sample_copy):
    csv = sample_copy/'train'/'train.csv'
    pd.read_csv(csv).drop(columns='age').to_csv(csv, index=False)
    with pytest.raises(DataError, match=r'train.csv: missing column\(s\) age'): read_train(sample_copy)


def test_bad_gender_and_age_values(sample_copy):
    csv = sample_copy/'train'/'train.csv'
    t = pd.read_csv(csv, dtype=str); t.loc[0, 'gender'] = 'F'; t.loc[1, 'age'] = 'old'; t.to_csv(csv, index=False)
    with pytest.raises(DataError) as e: read_train(sample_copy)
    assert "'male' or 'female'" in str(e.value) and "age 'old' is not a number" in str(e.value)


def test_unknown_and_extra_files(sample_copy):
    f = folders(sample_copy)[2]
    (f/'mask6.jpg').write_bytes((f/'mask1.jpg').read_bytes())
    (f/'mask1.png').write_bytes(b'')
    with pytest.raises(DataError) as e: read_train(sample_copy)
    msg = str(e.value)
    assert "unknown photo name 'mask6'" in msg and 'more than one mask1' in msg and '8 photos instead of 7' in msg


def test_png_rgba_and_grey_photos_are_read_as_rgb(sample_copy):
    f = folders(sample_copy)[1]
    Image.open(f/'mask1.jpg').convert('RGBA').save(f/'mask1.png'); (f/'mask1.jpg').unlink()
    Image.open(f/'mask2.jpg').convert('L').save(f/'mask2.jpg')
    df = read_train(sample_copy)
    assert len(df) == N
    paths = df[df.folder == f.name].set_index('stem').path
    assert paths['mask1'].endswith('mask1.png')
    for s in ('mask1', 'mask2'): assert open_image(paths[s]).mode == 'RGB'
    dls = mask_dls(df, size=(32, 24), bs=8, num_workers=0, cache=False)
    x, _ = dls.valid.one_batch()
    assert x.shape[1] == 3


def test_exif_rotated_jpeg_is_turned_upright(sample_copy):
    f = folders(sample_copy)[0]/'mask1.jpg'
    upright = Image.open(f).convert('RGB'); w, h = upright.size
    exif = upright.getexif(); exif[0x0112] = 8      # stored sideways, with the tag that turns it back
    upright.transpose(Image.Transpose.ROTATE_270).save(f, exif=exif, quality=95)
    assert Image.open(f).size == (h, w)
    assert open_image(f).size == (w, h)
    df = read_train(sample_copy)
    cached = Image.open(ImageCache((40, 32))([f])[0])      # the cache stores it upright too
    near = lambda a, b: np.abs(np.asarray(a, dtype=float) - np.asarray(b.resize((32, 40)), dtype=float)).mean()
    assert near(cached, upright) < 12 < near(cached, upright.transpose(Image.Transpose.ROTATE_180))
    assert len(df) == N


def test_dot_files_are_ignored(sample_copy):
    f = folders(sample_copy)[0]
    (f/'.DS_Store').write_bytes(b'\0\1'); (f/'._mask1.jpg').write_bytes(b'junk')
    assert len(read_train(sample_copy)) == N


def test_eval_missing_image(sample_copy):
    gone = sorted((sample_copy/'eval'/'images').iterdir())[4]; gone.unlink()
    with pytest.raises(DataError, match=f'{gone}: listed in .*info.csv but missing'): read_eval(sample_copy)
    with pytest.warns(UserWarning): assert len(read_eval(sample_copy, on_error='skip')) == 40*7-1


def test_dataset_path_that_does_not_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match='no such folder'): read_train(tmp_path/'nope')
    with pytest.raises(DataError, match='no train/train.csv'): read_train(tmp_path)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_profile_folds_keep_people_whole_and_strata_balanced(sample, seed):
    df = read_train(sample)
    folds = profile_folds(df, n_folds=3, seed=seed)
    assert (folds >= 0).all()
    assert pd.Series(folds).groupby(df.id.to_numpy()).nunique().max() == 1
    strata = df.gender*3 + df.age_band
    whole = strata.value_counts(normalize=True)
    for k in range(3):
        part = strata[folds == k].value_counts(normalize=True).reindex(whole.index, fill_value=0)
        assert (part - whole).abs().max() < 0.12
    assert (profile_folds(df, 3, seed) == folds).all()


def edit_csv(csv, change):
    "Rewrite `csv` through `change(frame)`"
    t = pd.read_csv(csv, dtype=str); t = change(t); t.to_csv(csv, index=False)


def test_duplicate_rows_and_reused_ids_are_refused(sample_copy):
    csv = sample_copy/'train'/'train.csv'
    edit_csv(csv, lambda t: pd.concat([t, t.iloc[[4]]], ignore_index=True))
    with pytest.raises(DataError, match=r'train.csv line 38 .*an earlier line lists too'): read_train(sample_copy)
    with pytest.warns(UserWarning, match='1 duplicate row'): assert len(read_train(sample_copy, on_error='skip')) == N
    edit_csv(csv, lambda t: t.iloc[:36].assign(id=lambda d: d.id.where(d.index != 7, d.id[6])))   # line 9 reuses line 8's id
    with pytest.raises(DataError) as e: read_train(sample_copy)
    assert 'names 2 profile folders' in str(e.value) and 'line 8 ' in str(e.value) and 'line 9 ' in str(e.value)
    with pytest.warns(UserWarning): assert len(read_train(sample_copy, on_error='skip')) == N - 14


@pytest.mark.parametrize('age', ['-5', '200', '31.5'])
def test_ages_outside_a_life_are_refused(sample_copy, age):
    edit_csv(sample_copy/'train'/'train.csv', lambda t: t.assign(age=t.age.where(t.index != 2, age)))
    with pytest.raises(DataError, match=f"line 4 .*age '?{re.escape(age)}'? is not a whole number of years in 0..120"): read_train(sample_copy)


def test_a_16_bit_png_is_read_as_its_picture(sample_copy):
    f = folders(sample_copy)[0]
    grey = np.asarray(Image.open(f/'mask1.jpg').convert('L'), dtype=np.uint16)
    Image.fromarray(grey*257).save(f/'mask1.png'); (f/'mask1.jpg').unlink()
    assert Image.open(f/'mask1.png').mode.startswith('I')
    read = np.asarray(open_image(f/'mask1.png').convert('L'), dtype=float)
    assert np.abs(read - grey).mean() < 1 and read.mean() < 200


@pytest.mark.parametrize('which', ['train/train.csv', 'eval/info.csv'])
@pytest.mark.parametrize('content, message', [
    (b'', 'empty file'),
    (None, 'a header line but no rows'),
    ('id,gender,race,age,path\n000001,여성,Asian,20,사람\n'.encode('cp949'), 'not UTF-8 text (it decodes as CP949'),
])
def test_unreadable_csvs_name_the_file(sample_copy, which, content, message):
    csv = sample_copy/which
    csv.write_bytes(csv.read_bytes().splitlines(keepends=True)[0] if content is None else content)
    with pytest.raises(DataError, match=f'{csv}: {re.escape(message)}'): (read_train if which.startswith('train') else read_eval)(sample_copy)


def test_spaces_and_unicode_forms_in_names_are_normalised(sample_copy):
    import unicodedata
    csv = sample_copy/'train'/'train.csv'
    people = pd.read_csv(csv, dtype=str)
    old = sample_copy/'train'/'images'/people.path[0]
    nfd = unicodedata.normalize('NFD', '김민지_' + people.path[0])
    old.rename(old.parent/nfd)                                       # stored NFD, as macOS writes Korean names
    people.loc[0, 'path'] = unicodedata.normalize('NFC', '김민지_' + people.path[0])
    people.loc[1, 'path'] = people.path[1] + ' '                     # a trailing space
    people.to_csv(csv, index=False)
    df = read_train(sample_copy)
    assert len(df) == N and (df.folder == nfd).sum() == 7


def test_a_folder_named_like_a_photo_is_reported_as_such(sample_copy):
    f = folders(sample_copy)[2]
    (f/'mask1.jpg').unlink(); (f/'mask1.jpg').mkdir()
    with pytest.raises(DataError, match=f"{f/'mask1.jpg'}: a folder, not a photo"): read_train(sample_copy)
