"""Make ``ansible_collections.openvolume.compute`` importable from a checkout.

The repository root is the collection root; pytest sees it through a
symlink tree under build/collections (the same one the Makefile gives
ansible), so the tests import the code exactly as Ansible does.
"""

from __future__ import annotations

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_TREE = os.path.join(_ROOT, "build", "collections")
_LINK = os.path.join(_TREE, "ansible_collections", "openvolume", "compute")

if not os.path.islink(_LINK) and not os.path.isdir(_LINK):
    os.makedirs(os.path.dirname(_LINK), exist_ok=True)
    os.symlink(_ROOT, _LINK)
if _TREE not in sys.path:
    sys.path.insert(0, _TREE)
