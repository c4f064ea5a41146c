"""``bbc1k`` / ``python -m bbc1k``: download, synthesise and validate datasets,
and train the from-scratch models.

    bbc1k download --source {welchlabs,github,synthetic} --dest DIR [--url URL] [--sha256 HEX]
    bbc1k synth --dest DIR --n N --seed S [--size 512x384]
    bbc1k validate DIR
    bbc1k train classifier DATA_DIR [options]    (bbc1k train classifier --help)
    bbc1k train segmenter DATASET_DIR [options]

Exit status: 0 done, 1 failed (the message says why and what to do), 2 bad usage
(``train``: 2 also when the data cannot be used).
"""
from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser"]

RECIPES = ("classifier", "segmenter")
"""``bbc1k train RECIPE``: the recipe's own command line (bbc1k.train.cli) reads the rest."""


class _Parser(argparse.ArgumentParser):
    """argparse that names the option or choice a typo probably meant."""

    root: _Parser | None = None
    argv: Sequence[str] = ()

    def error(self, message: str):  # type: ignore[override]
        root = self.root or self
        hints = _did_you_mean(message, root)
        super().error("\n  ".join([message, *hints]))


def _all_options(parser: argparse.ArgumentParser) -> set[str]:
    options: set[str] = set()
    for action in parser._actions:
        options.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                options |= _all_options(sub)
    return options


def _did_you_mean(message: str, root: _Parser) -> list[str]:
    hints = []
    m = re.search(r"invalid choice: '?([^'\s]*)'? \(choose from (.+)\)", message)
    if m:
        choices = [c.strip(" '\"") for c in m.group(2).split(",")]
        close = difflib.get_close_matches(m.group(1), choices, n=1, cutoff=0.5)
        if close:
            hints.append(f"did you mean {close[0]!r}?")
    known = _all_options(root)
    if root.argv[:1] == ["train"]:
        return hints  # the options after the recipe are the recipe's own parser's to check
    for token in root.argv:
        name = token.split("=", 1)[0]
        if not name.startswith("-") or name in ("-", "--") or re.fullmatch(r"-\d.*", name):
            continue
        if name in known or any(k.startswith(name) for k in known if name.startswith("--")):
            continue  # known, or an abbreviation argparse accepts
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        hints.append(f"unknown option {name!r}" + (f": did you mean {close[0]!r}?" if close else ""))
    return hints


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX×,]\s*(\d+)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 512x384, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _sha256(text: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raise argparse.ArgumentTypeError(f"expected 64 hexadecimal digits, got {text!r}")
    return text.lower()


def build_parser() -> _Parser:
    from bbc1k.sources import SOURCES

    parser = _Parser(prog="bbc1k", description="Get, generate and check the bbc1k dataset "
                                               "(brick, ball, cylinder).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    about = "; ".join(f"{s.name}: {s.about} ({s.labels})" for s in SOURCES.values())
    dl = commands.add_parser("download", help="download (or generate) DIR/bbc_train",
                             description=f"Install DIR/bbc_train from a source. Sources: {about}.")
    dl.add_argument("--source", required=True, choices=list(SOURCES), help="where the dataset comes from")
    dl.add_argument("--dest", type=Path, default=Path("data"), metavar="DIR",
                    help="folder that receives bbc_train/ (default: data)")
    dl.add_argument("--url", help="download the archive from this mirror instead")
    dl.add_argument("--sha256", type=_sha256, metavar="HEX", help="refuse an archive with another SHA-256")
    dl.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    sy = commands.add_parser("synth", help="generate a synthetic DIR/bbc_train",
                             description="Generate a synthetic DIR/bbc_train (exact masks and boxes).")
    sy.add_argument("--dest", type=Path, default=Path("data"), metavar="DIR",
                    help="folder that receives bbc_train/ (default: data)")
    sy.add_argument("--n", type=_positive, default=1000, help="number of images (default: 1000)")
    sy.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    sy.add_argument("--size", type=_size, default=(512, 384), metavar="WxH",
                    help="image size (default: 512x384)")
    sy.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    va = commands.add_parser("validate", help="check a dataset; exit 1 listing every problem",
                             description="Check DIR (bbc_train or its parent): exit 0 with a summary, "
                                         "or 1 listing every problem.")
    va.add_argument("dir", type=Path, metavar="DIR")
    va.add_argument("--quick", action="store_true", help="check files and tables only, do not decode images")

    tr = commands.add_parser("train", help="train a model from random weights and export it as ONNX",
                             description="Train a model from random weights (no ImageNet) and export it "
                                         "as ONNX. Options after RECIPE are the recipe's: "
                                         "bbc1k train RECIPE --help lists them.")
    tr.add_argument("recipe", choices=RECIPES, metavar="RECIPE",
                    help="classifier: ResNet-9 on a folder of class subfolders; segmenter: a small U-Net "
                         "on a bbc1k dataset (and, with --detector, a detector that boxes its mask)")
    tr.add_argument("args", nargs=argparse.REMAINDER, help="the recipe's options")

    for sub in commands.choices.values():
        sub.root = parser
    return parser


def _train(recipe: str, argv: list[str]) -> int:
    # imported here: training needs torch, the other commands must not
    from bbc1k.train.cli import classifier_main, segmenter_main

    main = classifier_main if recipe == "classifier" else segmenter_main
    return main(argv, prog=f"bbc1k train {recipe}")


def _run(args: argparse.Namespace) -> int:
    if args.command == "train":
        return _train(args.recipe, args.args)
    from bbc1k.download import DownloadError
    from bbc1k.sources import DataError, install
    from bbc1k.validate import validate

    if args.command == "validate":
        report = validate(args.dir, deep=not args.quick, progress=sys.stderr.isatty())
        print(report.format())
        return 0 if report.ok else 1
    try:
        if args.command == "download":
            path = install(args.source, args.dest, url=args.url, sha256=args.sha256, progress=not args.quiet)
        else:
            path = install("synthetic", args.dest, n=args.n, seed=args.seed, size=args.size,
                           progress=not args.quiet)
    except (DownloadError, DataError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: nothing was installed (a partial download is kept and resumes next time)",
              file=sys.stderr)
        return 130
    print(f"dataset ready: {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    parser.argv = list(sys.argv[1:] if argv is None else argv)
    return _run(parser.parse_args(parser.argv))
