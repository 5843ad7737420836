"Install mask_fastai from the metadata and requirements in settings.ini."
from configparser import ConfigParser
import setuptools

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

licenses = {'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License')}
reqs = cfg.get('requirements', '').split()
extras = {k: cfg.get(f'{k}_requirements', '').split() for k in ('wandb', 'onnx', 'sweep', 'demo', 'teacher', 'dev')}
scripts = [s for s in cfg.get('console_scripts', '').split() if s]

setuptools.setup(
    name=cfg['lib_name'], version=cfg['version'], description=cfg['description'],
    long_description=open('README.md', encoding='utf-8').read(), long_description_content_type='text/markdown',
    author=cfg['author'], author_email=cfg['author_email'], license=licenses[cfg['license']][0],
    keywords=cfg['keywords'].split(), python_requires=f">={cfg['min_python']}",
    classifiers=['Programming Language :: Python :: 3', f"License :: {licenses[cfg['license']][1]}"],
    packages=setuptools.find_packages(include=[cfg['lib_path'], f"{cfg['lib_path']}.*"]),
    include_package_data=True, install_requires=reqs, extras_require=extras, zip_safe=False,
    entry_points={'console_scripts': scripts, 'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
)
