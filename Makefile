# energy: every target runs the idempotent set-up first (apt packages, the MLX wheel, the
# patched mlx-sys), so each works on a fresh machine.
CARGO ?= cargo

.PHONY: setup run test check ci bench

setup:
	./scripts/setup.sh

# The main job: collect 180 days (synthetic source, offline) and train. It uses the same build
# as the tests (dependencies optimised, see Cargo.toml), so a fresh machine compiles once; MLX
# itself is the optimised library either way. `cargo build --release` makes a faster binary for
# the Rust-side work (collection, features) at the cost of a second, ~16-minute build.
run: setup
	$(CARGO) run -- train --collect --days 180

# The whole test suite.
test: setup
	$(CARGO) test --all-targets

check: setup
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

ci: check test

bench: setup
	$(CARGO) bench
