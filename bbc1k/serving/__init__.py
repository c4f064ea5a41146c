"""Run exported bbc1k models on photos: decode, prepare, predict, interpret.

The image handling that the web app, the training recipes' ONNX checks and the
benchmarks share, with numpy and Pillow only: no torch, no fastai (ONNX
Runtime is imported when a session is opened). One module per step:

- :mod:`bbc1k.serving.decode`: uploaded bytes to an RGB image, or an
  :class:`ImageError` that says why not;
- :mod:`bbc1k.serving.preprocess`: an image to a model's input, and the
  :class:`Fit` that maps answers back;
- :mod:`bbc1k.serving.postprocess`: class probabilities, boxes and masks in
  image pixels, masks as PNG;
- :mod:`bbc1k.serving.runtime`: ONNX Runtime sessions, the optimised-graph
  cache and the CPUs this process may use.
"""
from bbc1k.serving.decode import (ACCEPTED_FORMATS, DEFAULT_MAX_PIXELS, DEFAULT_WORK_SIDE, BadImage, Decoded,
                                  ImageError, ImageTooLarge, NotAnImage, decode_image)
from bbc1k.serving.postprocess import (MASK_COLOURS, box_to_image, mask_to_image, png_base64, probabilities,
                                       softmax)
from bbc1k.serving.preprocess import Fit, fit_image, prepare, to_tensor
from bbc1k.serving.runtime import content_sha256, cpu_count, open_session, optimized_graph_path

__all__ = [
    "ACCEPTED_FORMATS", "DEFAULT_MAX_PIXELS", "DEFAULT_WORK_SIDE", "BadImage", "Decoded", "ImageError",
    "ImageTooLarge", "NotAnImage", "decode_image",
    "Fit", "fit_image", "prepare", "to_tensor",
    "MASK_COLOURS", "box_to_image", "mask_to_image", "png_base64", "probabilities", "softmax",
    "content_sha256", "cpu_count", "open_session", "optimized_graph_path",
]
