# Two commands for people: `make run` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DEV_ENV := DEBUG=true
# Tests run with DEBUG off (production settings) over plain http on loopback.
TEST_ENV := SECRET_KEY=$${SECRET_KEY:-test-only-secret-key-never-used-in-production} \
	CAREID_AUDIT_CHAIN_KEY=$${CAREID_AUDIT_CHAIN_KEY:-test-only-audit-chain-key-never-used-in-production} \
	CAREID_SSL_REDIRECT=false DJANGO_ALLOW_ASYNC_UNSAFE=true

.PHONY: run test install install-test chromium clean

$(VENV)/.python-ok:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "careid needs Python 3.11 or newer"'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	touch $@

$(VENV)/.installed: $(VENV)/.python-ok requirements.txt
	$(PIP) install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PIP) install --quiet -r requirements-test.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed node_modules/.installed

install-test: $(VENV)/.installed-test node_modules/.installed chromium

# The browser tests drive Debian's Chromium (Playwright cannot download its own here).
chromium:
	@command -v chromium >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# careid on :8000 in the foreground, the demo eRS (demo_ers/) on :8001 in the background; Ctrl-C stops
# both: gunicorn gets the Ctrl-C too, and the trap stops it (with the same quick-shutdown signal) if
# runserver ends any other way.
run: install
	$(DEV_ENV) $(PY) manage.py migrate --no-input
	$(DEV_ENV) $(PY) manage.py demo_data
	@$(PY) -m demo_ers & demo=$$!; \
	trap 'kill -INT $$demo 2>/dev/null; wait $$demo 2>/dev/null' EXIT INT TERM; \
	$(DEV_ENV) $(PY) manage.py runserver 127.0.0.1:8000

test: install-test
	$(VENV)/bin/ruff check .
	# Against an empty in-memory database: the check needs no data, and CI's careid database need not exist.
	$(TEST_ENV) DATABASE_URL=sqlite://:memory: $(PY) manage.py makemigrations --check --dry-run >/dev/null || \
		{ echo "Model changes without a migration: run manage.py makemigrations"; exit 1; }
	$(TEST_ENV) $(VENV)/bin/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) node_modules db.sqlite3 staticfiles .demo-ers
