"""The description an exported ONNX model carries about itself.

Every ``.onnx`` file that bbc1k exports stores a JSON object in its
``metadata_props`` under the key ``"bbc1k"``. The web app reads only this:
what the model does, which classes it knows, how to prepare an image for it
and what each output means. See docs/model-format.md for the full contract.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

META_KEY = "bbc1k"
FORMAT = "bbc1k-onnx/1"

TASKS = ("classify", "detect", "segment", "classify+detect", "generate")
RESIZE_METHODS = ("squish", "crop", "pad")
OUTPUT_KINDS = ("class_logits", "box", "mask_logits", "image")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Mean and std of the real bbc1k photos' RGB (0..1): the from-scratch recipes
# normalise with these, so the network sees roughly unit variance input. They
# go into the model's metadata, so the app normalises the same way.
PHOTO_MEAN = (0.63, 0.60, 0.55)
PHOTO_STD = (0.23, 0.23, 0.23)


@dataclass
class OutputSpec:
    """One graph output. ``shape`` uses "N" for the batch axis.

    kinds:
      - ``class_logits``: [N, C] unnormalised scores over ``classes``.
      - ``box``: [N, 4] one box per image, ``box_format`` ("xyxy": x0, y0, x1, y1)
        in ``box_range`` ([-1, 1]: -1 is the left/top edge of the model input,
        +1 the right/bottom edge).
      - ``mask_logits``: [N, C, H, W] per-pixel scores over ``classes`` (mask order).
      - ``image``: [N, 3, H, W] generated RGB in ``value_range``.
    """

    name: str
    kind: str
    shape: list[Any]
    box_format: str | None = None
    box_range: list[float] | None = None
    value_range: list[float] | None = None

    def __post_init__(self) -> None:
        if self.kind not in OUTPUT_KINDS:
            raise ValueError(f"output {self.name!r}: kind {self.kind!r} is not one of {OUTPUT_KINDS}")


@dataclass
class ModelMeta:
    """What a served model needs to know. Input is float32 NCHW RGB scaled to
    0..1, then ``(x - mean) / std`` per channel, at ``input_size`` [H, W] fitted
    by ``resize`` (squish: stretch to size; crop: scale the short side then
    centre-crop; pad: scale the long side then pad with black pixels before
    normalising)."""

    task: str
    name: str
    classes: list[str]
    input_size: list[int]
    outputs: list[OutputSpec]
    input_name: str = "image"
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    resize: str = "squish"
    latent_dim: int | None = None  # generate: input is [N, latent_dim, 1, 1] noise
    format: str = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)  # training figures, architecture, dates

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task {self.task!r} is not one of {TASKS}")
        if self.resize not in RESIZE_METHODS:
            raise ValueError(f"resize {self.resize!r} is not one of {RESIZE_METHODS}")
        if len(self.input_size) != 2:
            raise ValueError(f"input_size must be [H, W], got {self.input_size!r}")
        self.outputs = [o if isinstance(o, OutputSpec) else OutputSpec(**o) for o in self.outputs]

    def output(self, kind: str) -> OutputSpec | None:
        """The first output of ``kind``, or None."""
        return next((o for o in self.outputs if o.kind == kind), None)

    def to_json(self) -> str:
        d = asdict(self)
        d["outputs"] = [{k: v for k, v in o.items() if v is not None} for o in d["outputs"]]
        return json.dumps({k: v for k, v in d.items() if v is not None}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelMeta":
        d = json.loads(text)
        if d.get("format", FORMAT) != FORMAT:
            raise ValueError(f"unsupported model format {d.get('format')!r}; this bbc1k reads {FORMAT}")
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:  # newer writers may add keys: keep them, do not fail
            d.setdefault("extra", {}).update({k: d.pop(k) for k in unknown})
        return cls(**d)


def read_onnx_meta(path: str) -> ModelMeta:
    """Read the bbc1k description of an ``.onnx`` file through ONNX Runtime
    (imported here, so bbc1k imports without it)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    props = sess.get_modelmeta().custom_metadata_map
    if META_KEY not in props:
        raise ValueError(f"{path}: no '{META_KEY}' entry in the ONNX metadata_props; was it exported by bbc1k?")
    return ModelMeta.from_json(props[META_KEY])
