"""Stand-in for get-pip.py, which ansible-test downloads from its own host.

ansible-test bootstraps pip in each sanity virtual environment by running a
cached ``get_pip_<version>.py``; the Makefile places this file there. It takes
pip from Python's bundled ``ensurepip`` and then installs the requested
packages from the package index pip is configured for, so no other host is
contacted. It accepts get-pip.py's arguments (pip options and packages).
"""

from __future__ import annotations

import subprocess
import sys

GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}


def main() -> None:
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"])
    args = [a for a in sys.argv[1:] if a not in GET_PIP_ONLY]
    subprocess.check_call([sys.executable, "-m", "pip", "install", *args])


if __name__ == "__main__":
    main()
