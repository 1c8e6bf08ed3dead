# Entry points: `make site` (the sandbox) and `make test` (everything CI runs).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        ?= .venv
PY          := $(VENV)/bin/python
BIN         := $(VENV)/bin
export CONTAINERS_CONF := $(CURDIR)/containers/containers.conf
export ANSIBLE_CONFIG  := $(CURDIR)/ansible.cfg
export PATH            := $(CURDIR)/$(BIN):$(PATH)
IMAGES      := 12:bookworm 13:trixie
# Two lanes side by side (scripts/molecule-lanes): production beside the other three, whose sum is
# about as long. Under Mitogen a converge leaves a third of the two cores idle and most of a verify
# waits on brokers, alerts and timeouts, so each lane fills the other's gaps. `make molecule
# SCENARIOS="worker migrate"` runs the scenarios named, one after another.
LANES       ?= production|default worker migrate
SCENARIOS   ?=

.PHONY: help deps venv images site sandbox sandbox-destroy smoke doctor lint lint-fast unit unit-py unit-fast check test molecule bench bench-ssh clean

help:
	@echo "make site             create the local sandbox and provision it (site.yml)"
	@echo "make test             lint, unit tests and every Molecule scenario (what CI runs)"
	@echo "make sandbox-destroy  remove the sandbox containers"
	@echo "make smoke            the live smoke suite against the sandbox broker"
	@echo "make doctor           the read-only health report of the sandbox (playbooks/doctor.yml)"
	@echo "make check            the fast loop (no Ansible run, no containers): lint-fast and unit-fast"
	@echo "make lint-fast        ruff, ruff format --check, mypy --strict (worker), yamllint --strict"
	@echo "make lint             lint-fast, ansible-lint --profile production and ansible-test sanity (the collection)"
	@echo "make unit-fast        the unit tests not marked ansible (tests/unit -m 'not ansible'), ansible-test units, the worker's tests"
	@echo "make unit             every unit test: tests/unit (with those that run Ansible), ansible-test units, the worker's tests"
	@echo "make molecule | bench | bench-ssh"

deps: .stamps/apt venv

.stamps/apt: scripts/install-deps
	scripts/install-deps
	@mkdir -p .stamps && touch $@

venv: $(VENV)/.installed

# The pinned tools, then the worker (account_worker) and the suites' helpers (support), editable,
# for the tests and bench/ to import (their dependencies are among the pins).
$(VENV)/.installed: requirements.txt worker/pyproject.toml tests/support/pyproject.toml | .stamps/apt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e worker -e tests/support
	$(BIN)/ansible-galaxy collection install -r requirements.yml
	touch $@

# Both at once: 128 s instead of 85 + 73 one after the other (2026-12-04; debootstrap waits on
# downloads and disk as much as on the cores).
images: .stamps/apt
	@pids=; for spec in $(IMAGES); do \
	  scripts/build-image "$${spec#*:}" "localhost/bundle-debian:$${spec%%:*}" & pids="$$pids $$!"; \
	done; failed=0; for pid in $$pids; do wait $$pid || failed=1; done; exit $$failed

# The virtualenv and the base images at once (pip and debootstrap wait on downloads and disk as much
# as on the cores); then the containers.
sandbox: .stamps/apt
	@$(MAKE) --no-print-directory -j2 venv images
	$(BIN)/ansible-playbook playbooks/sandbox.yml -i inventory/sandbox

site: sandbox
	$(BIN)/ansible-playbook site.yml -i inventory/sandbox
	$(BIN)/ansible-playbook playbooks/smoke.yml -i inventory/sandbox
	@echo
	@echo "Sandbox CA:    $(CURDIR)/.sandbox/tls/ca.crt"
	@echo "AMQPS:         amqps://app:<password>@127.0.0.1:5671/app  (verify with the CA above)"
	@echo "Management UI: https://127.0.0.1:15671/  (user: admin; trust the CA above, or curl --cacert)"
	@echo "Plain (on 127.0.0.1 only, for the benchmark's AMQP/AMQPS comparison): amqp://127.0.0.1:5672, http://127.0.0.1:15672"
	@echo "Admin password: cat .sandbox/rabbitmq_admin_password"
	@echo "App user 'app' on vhost 'app': cat .sandbox/rabbitmq_app_password"
	@echo "Prometheus:   http://127.0.0.1:9090/  (Debian's classic UI: /classic/graph, /classic/targets, /classic/alerts)"
	@echo "Alertmanager: http://127.0.0.1:9093/api/v2/alerts  (Debian's package has no web UI; amtool on the host)"
	@echo "The whole deployment's state (make doctor runs it again any time):"
	$(BIN)/ansible-playbook playbooks/doctor.yml -i inventory/sandbox

smoke: deps
	@start=$$(date +%s%N); \
	$(BIN)/ansible-playbook playbooks/smoke.yml -i inventory/sandbox; rc=$$?; \
	echo "make smoke: $$(( ($$(date +%s%N) - start) / 1000000 )) ms"; exit $$rc

doctor: deps
	$(BIN)/ansible-playbook playbooks/doctor.yml -i inventory/sandbox

sandbox-destroy: deps
	$(BIN)/ansible-playbook playbooks/sandbox-destroy.yml -i inventory/sandbox

# The linters that take seconds; ansible-lint (a minute or more: it syntax-checks every playbook and
# role with ansible-playbook) only in `make lint`.
lint-fast: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	cd worker && $(abspath $(BIN))/mypy --strict
	$(BIN)/yamllint --strict .

lint: lint-fast
	$(BIN)/ansible-lint --profile production
	scripts/collection-test sanity

# Unit tests marked `ansible` (tests/unit/pytest.ini) start ansible-playbook: only in `make unit`.
unit-fast: deps
	$(BIN)/pytest -q -m "not ansible" tests/unit
	scripts/collection-test units
	$(BIN)/pytest -q worker/tests

unit: unit-py
	scripts/collection-test units

# The unit tests pytest runs (no ansible-test, which `make lint` also uses: two at once would share its
# output tree).
unit-py: deps
	$(BIN)/pytest -q tests/unit
	$(BIN)/pytest -q worker/tests

# The contributors' fast loop: no containers, no Ansible run. `make test` (CI) runs lint and unit in full.
check: lint-fast unit-fast

molecule: deps images
ifneq ($(strip $(SCENARIOS)),)
	scripts/molecule-lanes "$(SCENARIOS)"
else
	@IFS='|' read -ra lanes <<< "$(LANES)"; scripts/molecule-lanes "$${lanes[@]}"
endif

# Lint and the pytest unit tests side by side (each runs one process at a time: one after the other
# left a core idle for four minutes), each target's output printed whole when it ends; the base images
# (debootstrap: downloads and disk) built meanwhile, their output in reports/images.log. Then the
# collection's unit tests (ansible-test, after its sanity run) and every scenario.
test: deps
	@mkdir -p reports; $(MAKE) --no-print-directory images > reports/images.log 2>&1 & images=$$!; \
	$(MAKE) --no-print-directory -j2 --output-sync=target lint unit-py; rc=$$?; \
	wait $$images; irc=$$?; cat reports/images.log; \
	[ $$rc -eq 0 ] && [ $$irc -eq 0 ] || exit 1
	scripts/collection-test units
	$(MAKE) --no-print-directory molecule

bench: sandbox
	$(PY) bench/converge.py
	$(BIN)/ansible-playbook site.yml -i inventory/sandbox
	$(PY) bench/worker_throughput.py --png reports/worker_throughput.png
	$(PY) bench/ssh_throughput.py --png reports/ssh_throughput.png

# SSH jobs/s (worker ssh action vs Celery, and the concurrency bound) against a sandbox made by `make site`.
bench-ssh: deps
	$(PY) bench/ssh_throughput.py --png reports/ssh_throughput.png

clean:
	rm -rf .stamps
