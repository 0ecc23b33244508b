#!/usr/bin/env bash
# playbooks/attach.yml and detach.yml through ansible-runner, the engine AWX
# runs jobs with: survey-shaped extra vars, credential-shaped environment,
# the lab's etcd with authentication. See test_awx_runner.py.
set -eu
exec python -m pytest -q -p no:cacheprovider -rfE --tb=short "$@" test_awx_runner.py
