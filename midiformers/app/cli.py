"""Command line of the demo: ``python app.py [--model ...] [--host H] [--port P] [--share]``."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

from .demo import DEFAULT_CONCURRENCY, MAX_PRIMER_BYTES, create_demo
from .models import DEFAULT_MODEL_DIR

logger = logging.getLogger(__name__)


def parse_args(
    argv: Sequence[str] | None = None, default_models: Sequence[str] | None = None
) -> argparse.Namespace:
    """Parse the demo's options; host and port default to Gradio's environment variables
    (``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``, which Hub Spaces set), else 127.0.0.1:7860."""
    parser = argparse.ArgumentParser(
        prog="app.py", description="Gradio demo: generate MIDI with midiformers models."
    )
    parser.add_argument(
        "--model",
        nargs="+",
        default=list(default_models) if default_models else None,
        metavar="FOLDER_OR_HUB_ID",
        help=f"one or more saved models (default: {DEFAULT_MODEL_DIR}, written by train.py)",
    )
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    )
    parser.add_argument("--share", action="store_true", help="also serve on a gradio.live link")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help="generations running at once; other visitors wait in the queue",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads per generation (default 1: small models on a shared CPU "
        "generate up to 30x faster on one thread than on several)",
    )
    parser.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="start without loading the models and compiling their decode step (the first "
        "request then waits for both)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, default_models: Sequence[str] | None = None) -> None:
    """Build the demo and serve it until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    args = parse_args(argv, default_models)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    demo = create_demo(args.model, concurrency_limit=args.concurrency, warmup=args.warmup)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        max_file_size=4 * MAX_PRIMER_BYTES,  # larger uploads are refused before reaching us
    )
