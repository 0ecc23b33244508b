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

.PHONY: help deps venv setup collection lab-up lab-down lab-status lint sanity units integration molecule test test-vm molecule-vm demo bench clean nolog-begin nolog-check ee-check

help:
	@echo "make demo        set up and run the main job on the embedded defaults"
	@echo "make test        set up and run every test (lint, sanity, units, integration, VMs)"
	@echo "make lab-up | lab-down | lab-status   the local lab (tgtd, libvirtd, etcd, ceph)"
	@echo "make units | integration | sanity | lint | ee-check | molecule | test-vm | bench"

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

lint: setup
	@$(BIN)/ruff check plugins tests
	@$(BIN)/mypy plugins/module_utils

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

clean:
	rm -rf build tests/output
