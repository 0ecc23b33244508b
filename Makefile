# openvolume.compute: the two commands a user needs are `make demo` and
# `make test`; both set up everything they need first (apt packages as root,
# a .venv from requirements-dev.txt).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
export OV_LAB_DIR ?= /var/tmp/openvolume-lab
# The collection as ansible sees it: a symlink tree for running it in place,
# a copy for ansible-test (which wants a real ansible_collections/ path).
COLL_LINK := $(CURDIR)/build/collections
# (outside the checkout: ansible-test would otherwise find the checkout's git
# and ask it for the file list, in which build/ is ignored).
COLL_COPY := /var/tmp/openvolume-test-tree$(subst /,-,$(CURDIR))/ansible_collections/openvolume/compute
export ANSIBLE_COLLECTIONS_PATH := $(COLL_LINK)
export ANSIBLE_PYTHON_INTERPRETER := $(BIN)/python
export PATH := $(BIN):$(PATH)

.PHONY: help deps venv setup collection docs-venv docs docs-lint galaxy-check changelog lab-up lab-down lab-status lint sanity units integration molecule test test-vm molecule-vm demo bench bench-vm clean nolog-begin nolog-check ee-check

help:
	@echo "make demo        set up and run the main job on the embedded defaults"
	@echo "make test        set up and run every test (lint, sanity, units, integration, VMs)"
	@echo "make lab-up | lab-down | lab-status   the local lab (tgtd, libvirtd, etcd, ceph)"
	@echo "make units | integration | sanity | lint | ee-check | molecule | test-vm | bench | bench-vm"
	@echo "make docs        the documentation site (antsibull-docs, Sphinx) in build/docs/build/html"
	@echo "make docs-lint   check the plugin docs and docs/docsite (part of make lint)"
	@echo "make galaxy-check  build the tarball and run galaxy-importer on it, as Galaxy does on upload"

deps:
	@tests/lab/install-deps.sh

$(VENV)/.stamp: requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip 2> >(grep -v 'is ignored' >&2)
	@$(BIN)/pip install -q -r requirements-dev.txt 2> >(grep -v 'is ignored' >&2)
	@touch $@

venv: deps $(VENV)/.stamp

setup: venv collection

collection:
	@mkdir -p $(COLL_LINK)/ansible_collections/openvolume
	@ln -sfn $(CURDIR) $(COLL_LINK)/ansible_collections/openvolume/compute

# A clean copy of what git would ship (tracked and untracked-not-ignored).
test-tree: collection
	@rm -rf $(COLL_COPY) && mkdir -p $(COLL_COPY)
	@git ls-files -z --cached --others --exclude-standard | rsync -a --from0 --files-from=- ./ $(COLL_COPY)/

lab-up: venv
	@tests/lab/lab.sh up

lab-down:
	@tests/lab/lab.sh down

lab-status:
	@tests/lab/lab.sh status

# mypy runs from build/collections, where the plugins have the names they
# import each other by (ansible_collections.openvolume.compute.plugins.*).
lint: setup docs-lint
	@$(BIN)/ruff check plugins tests
	@cd $(COLL_LINK) && $(BIN)/mypy --config-file $(CURDIR)/pyproject.toml ansible_collections/openvolume/compute/plugins
	@$(BIN)/yamllint .
	@$(BIN)/ansible-lint

# The documentation and Galaxy tools live in venvs of their own: they would
# change packages of .venv (galaxy-importer pins its own ansible-core).
# ansible-doc is the project's (.venv/bin is first in PATH).
DOCS_VENV := $(CURDIR)/.venv-docs
GALAXY_VENV := $(CURDIR)/.venv-galaxy

$(DOCS_VENV)/.stamp: docs/requirements.txt
	@test -x $(DOCS_VENV)/bin/python || $(PYTHON) -m venv $(DOCS_VENV)
	@$(DOCS_VENV)/bin/pip install -q -r docs/requirements.txt 2> >(grep -v 'is ignored' >&2)
	@touch $@

docs-venv: $(DOCS_VENV)/.stamp

docs-lint: setup docs-venv
	@$(DOCS_VENV)/bin/antsibull-docs lint-collection-docs --plugin-docs $(COLL_LINK)/ansible_collections/openvolume/compute

# The site as antsibull-docs lays it out for one collection, from the
# collection in place (build/collections), built with Sphinx.
DOCS_DIR := $(CURDIR)/build/docs
# Labels of docs.ansible.com that antsibull-docs' pages link to; they resolve
# through intersphinx, which needs that host: the build is offline, so they
# stay unresolved (plain text) and are the only warnings allowed.
DOCS_OFFLINE_LABELS := undefined label: '(common_return_values|ansible_configuration_settings|action_plugins|ansible_collections\.ansible\.builtin\.[a-z_]+)'
docs: setup docs-venv
	@rm -rf $(DOCS_DIR) && mkdir -p $(DOCS_DIR)
	@$(DOCS_VENV)/bin/antsibull-docs sphinx-init --use-current --fail-on-error --lenient --dest-dir $(DOCS_DIR) \
	  openvolume.compute >/dev/null
	@echo "intersphinx_mapping = {}  # offline: make docs reaches no host but PyPI" >> $(DOCS_DIR)/conf.py
	@cd $(DOCS_DIR) && PATH=$(BIN):$(DOCS_VENV)/bin:$$PATH ./build.sh > build.log 2>&1 || { cat build.log; exit 1; }
	@! grep -E 'WARNING|ERROR' $(DOCS_DIR)/build.log | grep -Ev "$(DOCS_OFFLINE_LABELS)" || \
	  { echo "docs: Sphinx warnings above (full log: $(DOCS_DIR)/build.log)"; exit 1; }
	@echo "docs: $(DOCS_DIR)/build/html/index.html"

# CHANGELOG.rst and changelogs/changelog.yaml for galaxy.yml's version, from
# the fragments (run again to add later fragments to a release not yet
# published). From the ansible_collections path, where ansible-doc finds
# the plugins that are new in the release.
changelog: setup
	@cd $(COLL_LINK)/ansible_collections/openvolume/compute && \
	  $(BIN)/antsibull-changelog release --version $$(sed -n 's/^version: *//p' galaxy.yml)

$(GALAXY_VENV)/.stamp: requirements-galaxy.txt
	@test -x $(GALAXY_VENV)/bin/python || $(PYTHON) -m venv $(GALAXY_VENV)
	@$(GALAXY_VENV)/bin/pip install -q -r requirements-galaxy.txt 2> >(grep -v 'is ignored' >&2)
	@touch $@

# What Galaxy runs on an upload, on the tarball ansible-galaxy builds.
galaxy-check: setup $(GALAXY_VENV)/.stamp
	@rm -rf build/dist && mkdir -p build/dist
	@$(BIN)/ansible-galaxy collection build --output-path build/dist . >/dev/null
	@cd build/dist && PATH=$(GALAXY_VENV)/bin:$$PATH $(GALAXY_VENV)/bin/python -m galaxy_importer.main openvolume-compute-*.tar.gz

# ansible-test fetches get-pip.py from a host outside the package registries;
# tests/sanity/get_pip_offline.py does the same job from ensurepip and PyPI.
ANSIBLE_TEST_CACHE := $(HOME)/.ansible/test/cache
sanity: setup test-tree
	@v=$$(sed -n "s/^ *pip='\([0-9.]*\)',\$$/\1/p" $(VENV)/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py); \
	  mkdir -p $(ANSIBLE_TEST_CACHE) && cp tests/sanity/get_pip_offline.py $(ANSIBLE_TEST_CACHE)/get_pip_$${v//./_}.py
	@cd $(COLL_COPY) && $(BIN)/ansible-test sanity --local --python 3.11 $(SANITY_ARGS)

# The execution environment (tests/ee/execution-environment.yml): the build
# context `ansible-builder create` writes has the collection, and its
# requirements are the controller's only (no image is built; seconds).
ee-check: setup test-tree
	@tests/ee/check.sh $(COLL_COPY)

# The reservation tests run against the lab's real etcd (they skip, saying
# why, if it cannot start).
units: setup
	@tests/lab/lab.sh up etcd
	@$(BIN)/pytest -q tests/unit

integration: setup test-tree lab-up
	@tests/integration/run.sh $(COLL_COPY) $(TARGETS)

test-vm: setup
	@tests/vmlab/run.sh

# The roles in host mode alone (the guests must be up: tests/lab/lab.sh up tgt vm).
molecule-vm: setup
	@molecule test -s compute_vms

# The roles' molecule scenario on the local lab (delegated driver).
molecule: setup lab-up
	@molecule test

# The lab's syslog is read from where it ended when the run began: no lab
# secret may reach it from any tier (tests/lab/nolog-check.sh).
nolog-begin: venv
	@tests/lab/nolog-check.sh begin

nolog-check:
	@tests/lab/nolog-check.sh check

test: nolog-begin lint ee-check sanity units integration molecule test-vm nolog-check
	@echo "make test: all passed"

demo: setup lab-up
	@playbooks/demo.sh

bench: setup lab-up
	@if [ -x tests/bench/run.sh ]; then tests/bench/run.sh; else echo "bench: no benchmark yet"; fi

# Host mode in the VM tier: 20 multipath volumes in one guest, playbooks
# against a plain script in the guest. A measurement: not part of make test.
bench-vm: setup
	@tests/vmlab/bench/run.sh

clean:
	rm -rf build tests/output
