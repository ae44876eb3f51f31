"""The hostile corpus: archives crafted to attack readers, and the tools the tests use on them.

``generate.py`` builds the corpus (``python -m tests.hostile.generate OUTDIR``), ``harness.py``
walks archives through the Tiled client and watches the canaries, ``readchild.py`` is the
memory-guarded subprocess that reads one node. See ``README.md``.
"""
