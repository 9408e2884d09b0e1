# Sourced by scripts/serve and scripts/test: make .venv and install the project into it.
# usage: ensure_venv EXTRAS   (e.g. "" or "[test,postgres]")
ensure_venv() {
	local extras=$1
	if [ ! -x .venv/bin/python ]; then
		if ! python3 -m venv .venv >/dev/null 2>&1; then
			rm -rf .venv
			# Debian's python3 lacks ensurepip until python3-venv is installed
			as_root apt-get install -y -qq --no-install-recommends python3-venv
			python3 -m venv .venv
		fi
	fi
	.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	.venv/bin/python -m pip install -q -e ".${extras}"
}

as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}
