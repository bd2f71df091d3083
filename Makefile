# The two commands a newcomer needs; each sets itself up on a fresh clone.
#   make demo         simulated entrances -> local database -> reference receiver, sped up
#   make test         lint (ruff, mypy) and the whole test suite
# For installing and CI:
#   make wheelhouse   every wheel a Pi needs, in dist/wheelhouse/ (for install.sh --wheelhouse)
#   make test-system  install.sh and the unit under a real systemd (debootstrap + nspawn; root)
#   make test-arm64   the test suite in a Debian arm64 root under qemu-user-static (root)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WHEELHOUSE := dist/wheelhouse
# Pure-Python wheels serve every Pi (aarch64, armv7l) and x86; one set per Python
# version the supported systems ship (Bookworm 3.11, Trixie 3.13).  MarkupSafe (under
# Flask, for kiosk web) has compiled wheels only, so each platform gets its own.
WHEEL_PYTHONS := 3.11 3.12 3.13
PI_PLATFORMS := manylinux2014_aarch64 manylinux2014_armv7l manylinux2014_x86_64
# lgpio is the one compiled package: Raspberry Pi OS has it from apt (python3-lgpio);
# for plain Debian, PyPI has lgpio 0.2.2.0 wheels for CPython 3.11 on x86_64 and aarch64
# only.  Fetched when available; install.sh says what to do where none fits.
LGPIO_PLATFORMS := manylinux_2_34_aarch64 manylinux_2_34_x86_64

.PHONY: demo test lint bench clean wheelhouse test-system test-arm64

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/kiosk demo

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_counting.py

wheelhouse: $(VENV)/.installed
	rm -rf $(WHEELHOUSE) && mkdir -p $(WHEELHOUSE)
	$(PY) -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); \
	    print("\n".join(p["project"]["dependencies"] + p["build-system"]["requires"] + ["wheel"]))' \
	    > $(WHEELHOUSE)/requirements.txt
	for v in $(WHEEL_PYTHONS); do for p in $(PI_PLATFORMS); do \
	    $(PY) -m pip download --quiet --disable-pip-version-check --dest $(WHEELHOUSE) \
	        --only-binary=:all: --platform $$p --platform any --implementation cp \
	        --abi cp$$(echo $$v | tr -d .) --abi abi3 --abi none --python-version $$v \
	        -r $(WHEELHOUSE)/requirements.txt || exit 1; \
	done; done
	for p in $(LGPIO_PLATFORMS); do \
	    $(PY) -m pip download --quiet --disable-pip-version-check --dest $(WHEELHOUSE) --no-deps \
	        --only-binary=:all: --platform $$p --implementation cp --abi cp311 --python-version 3.11 \
	        'lgpio>=0.2' || echo "note: no lgpio wheel for $$p (install.sh will say what to do)"; \
	done
	@echo "$(WHEELHOUSE): $$(ls $(WHEELHOUSE)/*.whl | wc -l) wheels; copy it with the clone, then:"
	@echo "  sudo ./systemd/install.sh --wheelhouse $(WHEELHOUSE)"

test-system: wheelhouse
	tests/system/run.sh --wheelhouse $(WHEELHOUSE)

test-arm64:
	tests/system/arm64.sh

clean:
	rm -rf $(VENV) kiosk-data *.egg-info dist build
