"mask_fastai: a fastai + timm kit for face-mask status classification."
__version__ = "0.1.0"
