"""The classifier recipe's trained network as PyTorch weights, beside its ONNX.

``bbc1k train classifier`` writes ``NAME.pt`` next to ``NAME.onnx`` so that
another recipe can build on the trained network: the segmenter names the
object in its masks with it (``--classifier``; :class:`bbc1k.nets.NamedByClassifier`).
Only what rebuilds the network is saved (its weights, its classes, the
recipe's fields) and it is read back with ``torch.load(weights_only=True)``:
loading a file runs no pickled code. The serving image leaves ``.pt`` files out.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from bbc1k.folders import DatasetError
from bbc1k.nets import Ensemble, FlipAverage, ResNet9
from bbc1k.train.classifier import Recipe, Result, test_size

FORMAT = "bbc1k classifier weights 1"
"""What a weights file says it is; a file without it is refused."""


@dataclass
class Classifier:
    """A trained classifier read back: ``network`` maps a normalised N x 3 x H x W
    batch at ``size`` (H, W) to logits over ``classes``."""

    classes: list[str]
    size: tuple[int, int]
    network: nn.Module


def network(recipe: Recipe, n_classes: int) -> nn.Module:
    """The structure :func:`bbc1k.train.classifier.train` returns for ``recipe``,
    with random weights: a ResNet-9, mirror-averaged when ``tta``, several
    averaged when ``ensemble``."""
    def member() -> nn.Module:
        net = ResNet9(n_classes, recipe.width)
        return FlipAverage(net) if recipe.tta else net

    return member() if recipe.ensemble == 1 else Ensemble([member() for _ in range(recipe.ensemble)])


def weights_path(onnx_path: str | Path) -> Path:
    """Where the weights of the model exported to ``onnx_path`` go: the same name, ``.pt``."""
    return Path(onnx_path).with_suffix(".pt")


def save(result: Result, recipe: Recipe, path: str | Path) -> Path:
    """Write the trained network of ``result`` with what rebuilds it."""
    settings = {k: v for k, v in asdict(recipe).items() if k != "augment"}
    path = Path(path)
    torch.save({"format": FORMAT, "classes": list(result.classes), "recipe": settings,
                "state_dict": {k: v.detach().cpu() for k, v in result.model.state_dict().items()}}, path)
    return path


def load(path: str | Path) -> Classifier:
    """The classifier saved at ``path`` (by :func:`save`), in eval mode on the CPU.
    Raises :class:`DatasetError` when the file is missing or not such weights."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file (`bbc1k train classifier` writes NAME.pt beside NAME.onnx)")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file or another format: say which file
        raise DatasetError(f"{path}: not classifier weights ({type(e).__name__}: {e})") from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise DatasetError(f"{path}: not classifier weights written by `bbc1k train classifier`")
    known = {f.name for f in fields(Recipe)} - {"augment"}
    recipe = Recipe(**{k: tuple(v) if k == "size" else v for k, v in saved["recipe"].items() if k in known})
    net = network(recipe, len(saved["classes"]))
    net.load_state_dict(saved["state_dict"])
    return Classifier(list(saved["classes"]), test_size(recipe), net.eval())
