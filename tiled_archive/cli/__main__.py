"""``python -m tiled_archive.cli``: the ``tiled-archive`` command."""

from . import main

main()
