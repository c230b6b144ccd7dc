# shimledger: `make demo` runs a real container and shows its history; `make test` runs
# the whole suite. Both set up everything first (Debian/Ubuntu, as root) and are idempotent.

VENV := .venv
PY := $(VENV)/bin/python
SYSTEM_PACKAGES := runc containerd busybox-static procps
# Only the tests need these: headless Chromium renders `audit --html`; CRIU is what runc
# calls for `checkpoint` (on kernels where it cannot dump, the tests check the clean error);
# PostgreSQL is the second event-store backend (the tests start a server of their own,
# with a TLS certificate openssl makes).
TEST_PACKAGES := chromium criu postgresql
PROTO_FILES := $(wildcard adapters/proto/*.proto)

.PHONY: demo test setup setup-postgres setup-dev system-packages test-packages proto bench \
	bench-serve bench-history bench-ledger bench-export bench-metrics bench-audit-page lint

demo: setup
	@work=$$(mktemp -d /tmp/shimledger-demo.XXXXXX); id=demo-$$(date +%s); \
	$(PY) scripts/busybox_bundle.py $$work/bundle sh -c \
		'echo "hello from busybox, pid $$$$ in its own namespace"; exit 3' >/dev/null; \
	echo "\$$ shimledger run --rm --bundle $$work/bundle $$id"; \
	$(VENV)/bin/shimledger run --rm --bundle $$work/bundle $$id; \
	echo "(exit status $$?)"; echo; \
	echo "\$$ shimledger history $$id"; \
	$(VENV)/bin/shimledger history $$id; status=$$?; rm -rf $$work; exit $$status

# The typed check and the linter first: a finding fails the run before any test starts.
test: setup-dev lint
	$(VENV)/bin/pytest -q -n 2

setup: system-packages $(VENV)/.installed
# A PostgreSQL store needs the postgres extra (psycopg's C build); the dev extras include it.
setup-postgres: system-packages $(VENV)/.installed-postgres
setup-dev: system-packages test-packages $(VENV)/.installed-dev

system-packages:
	@if [ "$$(id -u)" != 0 ]; then \
		echo "shimledger needs root: it installs $(SYSTEM_PACKAGES) with apt-get and runs" \
		     "containers with runc (namespaces, cgroups, mounts). Run: sudo make $(MAKECMDGOALS)" >&2; \
		exit 1; fi
	@missing=""; \
	command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || missing="$$missing runc"; \
	command -v containerd-shim-runc-v2 >/dev/null 2>&1 || missing="$$missing containerd"; \
	[ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 || missing="$$missing busybox-static"; \
	python3 -c 'import ensurepip' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	command -v ps >/dev/null 2>&1 || missing="$$missing procps"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

test-packages: system-packages
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v criu >/dev/null 2>&1 || [ -x /usr/sbin/criu ] || missing="$$missing criu"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-postgres: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install -q -e '.[postgres]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Regenerate adapters/proto/*_pb2.py(i) from our own .proto files.
proto: $(VENV)/.installed-dev
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. $(PROTO_FILES)

# Every benchmark prints ratios against references measured in the same run (~7 min).
bench: setup-dev
	$(PY) bench/run.py
	$(PY) bench/startup.py
	$(PY) bench/ttrpc_calls.py
	$(PY) bench/concurrency.py --runs 5

# What a running `shimledger serve` buys (bench/serve.py, ~5 min; installs podman if missing).
bench-serve: setup-dev
	$(PY) bench/serve.py --runs 41 --rounds 5

bench-history: setup-dev
	$(PY) bench/history.py --small 100000 --large 1000000 --runs 3

# `events --format cloudevents` against `events --json` on a million events (~8 min).
bench-export: setup-dev
	$(PY) bench/export_stream.py --events 1000000 --runs 3

# serve's /metrics scraped with 10,000 incarnations in the store, against prometheus_client's
# own exposition of the same series (~1 min).
bench-metrics: setup-dev
	$(PY) bench/metrics.py --incarnations 10000 --runs 101

# `audit --html` loaded in headless Chromium, 10,000 incarnations against 100 (~1 min).
bench-audit-page: setup-dev
	$(PY) bench/audit_page.py --large 10000 --small 100 --runs 21

# verify against a raw scan, appends with and without chaining, checkpoints (~5 min).
bench-ledger: setup-dev
	$(PY) bench/ledger.py --events 1000000 --runs 3

# ruff, then mypy in strict mode on the packages [tool.mypy] in pyproject.toml lists.
lint: setup-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy --config-file pyproject.toml
