"""Train a midiformers model: ``python train.py [recipe.yaml] [--key value ...]``.

With no recipe, ``configs/default.yaml`` trains a small GPT on the offline Bach chorales in
a few minutes on a laptop CPU. Also runs as ``accelerate launch train.py recipe.yaml``.
"""

from midiformers.training import cli

if __name__ == "__main__":
    cli()
