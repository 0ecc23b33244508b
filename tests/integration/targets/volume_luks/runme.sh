#!/usr/bin/env bash
# Encrypted volumes (LUKS, QEMU decrypts) through playbooks/attach.yml and
# detach.yml on the lab's real tgtd (qemu-mode iSCSI with CHAP) and Ceph
# (RBD with cephx). See test_luks.py.
set -eu
exec python -m pytest -q -p no:cacheprovider -rfE --tb=short "$@" test_luks.py
