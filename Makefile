# `make lab N=3`: builds the workspace and starts a lab of N hosts on this machine (as root;
# see the README's "The lab"). Ctrl-C or `quit` removes it.
N ?= 3
CARGO ?= cargo

.PHONY: build lab

build:
	CARGO_INCREMENTAL=0 $(CARGO) build --workspace

lab: build
	$(CARGO) run -q -p berth-tests --bin lab -- $(N)
