#!/usr/bin/env bash
# Live extend (Nova's extend_volume) through playbooks/extend.yml on the
# lab's real Ceph (RBD) and tgtd (qemu-mode iSCSI). See test_extend.py.
set -eu
exec python -m pytest -q -p no:cacheprovider -rfE --tb=short "$@" test_extend.py
