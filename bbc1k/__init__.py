"""bbc1k: the plumbing of the bbc1k workshop (data, export, visual helpers).

Importing this package never imports torch or fastai: the functions that need
them import them when called, so the slim serving image can use bbc1k too.
"""
from bbc1k.layout import CLASSES, MASK_CLASSES, OBJECT_CLASSES

__version__ = "0.1.0"
__all__ = ["CLASSES", "MASK_CLASSES", "OBJECT_CLASSES", "__version__"]
