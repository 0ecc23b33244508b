#!/usr/bin/env bash
# The safety promises of issue 14 on the real lab (qemu mode): the controller
# killed at each step of attach and detach, then a re-run or reconcile, with
# and without the lease lapsed; a second instance and a second run refused in
# between; same-host multiattach; a deleted domain; drift; orphans; an
# unreachable host. See test_safety.py.
set -eu
exec python -m pytest -q -p no:cacheprovider -rfE --tb=short -n 3 "$@" test_safety.py
