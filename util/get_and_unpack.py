"""The 2020 README's command, kept working as a thin wrapper of ``bbc1k download``:

    python util/get_and_unpack.py -url http://www.welchlabs.io/unccv/deep_learning/bbc_train.zip [-dest data]

It downloads the archive (resuming, retrying, checking), extracts it safely and
installs ``DEST/bbc_train``, exactly as ``python -m bbc1k download --url URL``.
"""
from __future__ import annotations

import argparse
import sys

from bbc1k.cli import main as bbc1k_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-url", required=True, help="address of the dataset zip")
    parser.add_argument("-dest", default="data", help="folder that receives bbc_train/ (default: data)")
    args = parser.parse_args(argv)
    # The GitHub archive holds class folders; every other zip is taken for the original layout.
    source = "github" if "github.com/unccv/deep_learning" in args.url else "welchlabs"
    return bbc1k_main(["download", "--source", source, "--url", args.url, "--dest", args.dest])


if __name__ == "__main__":
    sys.exit(main())
