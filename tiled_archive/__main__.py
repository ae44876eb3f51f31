"""``python -m tiled_archive``: the ``tiled-archive`` command."""

from .cli import main

main()
