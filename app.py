"""midiformers demo: ``python app.py [--model FOLDER_OR_HUB_ID ...] [--host H] [--port P] [--share]``.

Without ``--model`` it serves the model of the default ``python train.py`` run
(``outputs/default``). The page is built by :func:`midiformers.app.create_demo`, which tests
and Hub Spaces (``midiformers-hub space``) reuse.
"""

from midiformers.app import create_demo, main

__all__ = ["create_demo", "main"]

if __name__ == "__main__":
    main()
