"""``midiformers-hub``: Hub chores from the command line.

``midiformers-hub space OUT_DIR [--model FOLDER_OR_HUB_ID ...] [--push REPO_ID]`` writes a
Space folder for the demo (and uploads it with ``--push``).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from .push import push_folder
from .space import write_space

logger = logging.getLogger(__name__)

DEFAULT_MODEL = Path("outputs/default")  # what `python train.py` writes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="midiformers-hub", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    space = commands.add_parser(
        "space",
        help="write a Gradio Space folder for the demo",
        description=write_space.__doc__.split("\n")[0],
    )
    space.add_argument("out_dir", metavar="OUT_DIR", help="new folder for the Space")
    space.add_argument(
        "--model",
        nargs="+",
        default=None,
        metavar="FOLDER_OR_HUB_ID",
        help=f"models the Space serves; local folders are copied in (default: {DEFAULT_MODEL})",
    )
    space.add_argument("--title", default="midiformers demo")
    space.add_argument(
        "--package-spec",
        default=None,
        help="pip requirement for midiformers instead of copying the installed package",
    )
    space.add_argument("--push", metavar="REPO_ID", help="upload the folder as this Space")
    space.add_argument("--private", action="store_true", help="create the Space as private")
    space.add_argument("--token", default=None, help="Hub token (default: the logged-in one)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``midiformers-hub`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.model is None:
        if not (DEFAULT_MODEL / "config.json").is_file():
            parser.error(
                f"no model: {DEFAULT_MODEL} does not exist; create it with `python train.py` "
                "or pass --model FOLDER_OR_HUB_ID"
            )
        args.model = [str(DEFAULT_MODEL)]
    try:
        out_dir = write_space(
            args.out_dir, args.model, title=args.title, package_spec=args.package_spec
        )
    except (ValueError, RuntimeError) as error:
        parser.error(str(error))
    logger.info("Space written to %s (try it: cd %s && python app.py)", out_dir, out_dir)
    if args.push:
        url = push_folder(
            out_dir, args.push, token=args.token, private=args.private, repo_type="space"
        )
        logger.info("Uploaded to https://huggingface.co/spaces/%s (%s)", args.push, url)
    return 0
