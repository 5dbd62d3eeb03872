"""The Gradio demo (``python app.py``), shared by the repository and the Hub Spaces it builds.

Needs the ``app`` extra (``pip install "midiformers[app]"``): gradio, and symusic 0.5.9 for
audio.
"""

from .cli import main, parse_args
from .demo import MAX_PRIMER_BYTES, create_demo
from .models import DEFAULT_MODEL_DIR

__all__ = ["DEFAULT_MODEL_DIR", "MAX_PRIMER_BYTES", "create_demo", "main", "parse_args"]
