#!/usr/bin/env bash
# `make ee-check`: the execution environment definition works and carries the
# controller side only. Builds the collection tarball from SOURCE (a clean
# copy of what git ships), runs `ansible-builder create` on
# tests/ee/execution-environment.yml (a build context; no image is built) and
# checks that the context has the collection, and that the Python and system
# requirements an image build would install (ansible-builder's own
# introspection of the installed collection) are jmespath and etcd3gw and none
# of the compute hosts' libvirt-python, lxml or libvirt headers.
# Usage: tests/ee/check.sh SOURCE
set -euo pipefail
src=$1
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=$repo/build/ee
rm -rf "$out" && mkdir -p "$out"
fail() { echo "ee-check: $*" >&2; exit 1; }

ansible-galaxy collection build --force --output-path "$out" "$src" >/dev/null
cp "$out"/openvolume-compute-*.tar.gz "$out/openvolume-compute.tar.gz"
ansible-builder create -f "$repo/tests/ee/execution-environment.yml" --context "$out/context" >/dev/null

ctx=$out/context
test -f "$ctx/Containerfile" -o -f "$ctx/Dockerfile" || fail "no Containerfile in $ctx"
tar -xzOf "$ctx/_build/collections/openvolume-compute.tar.gz" MANIFEST.json \
  | grep -q '"name": "compute"' || fail "the context has no openvolume.compute tarball"
grep -q 'collections/openvolume-compute.tar.gz' "$ctx/_build/requirements.yml" \
  || fail "the context's galaxy requirements do not install the collection"

# What the image's builder stage would run, on the collection installed the same way.
ANSIBLE_COLLECTIONS_PATH="$out/installed" ansible-galaxy collection install --force --offline -p "$out/installed" "$out/openvolume-compute.tar.gz" >/dev/null
: > "$out/bindep.txt"  # not written when there is nothing
ansible-builder introspect "$out/installed" --write-pip "$out/pip.txt" --write-bindep "$out/bindep.txt" >/dev/null
for want in jmespath etcd3gw; do
  grep -q "^$want" "$out/pip.txt" || fail "$want missing from the EE's Python requirements ($out/pip.txt)"
done
# Neither in the introspected requirements nor anywhere in the context's text files.
unwanted='libvirt-python|^lxml|libvirt-dev|libvirt-devel|python3-libvirt|python3-lxml'
if grep -Eq "$unwanted" "$out/pip.txt" "$out/bindep.txt"; then
  fail "compute-host packages in the EE: $(grep -Eh "$unwanted" "$out/pip.txt" "$out/bindep.txt" | tr '\n' ' ')"
fi
if grep -rIEl "$unwanted" "$ctx" >/dev/null; then
  fail "compute-host packages in the build context: $(grep -rIEl "$unwanted" "$ctx" | tr '\n' ' ')"
fi
echo "ee-check: context $ctx has openvolume.compute; EE Python requirements: $(grep -v '^#' "$out/pip.txt" | cut -d'#' -f1 | xargs)"
