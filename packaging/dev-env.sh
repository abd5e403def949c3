# Shared set-up steps of ./quickstart.sh (and anything else that needs the project's venv
# on a fresh Debian machine). Source it, then call the functions; they are idempotent.

# cairn_system_packages PKG... : apt-get install the packages that are not installed yet.
cairn_system_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "== installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get -y -qq install "${missing[@]}" >/dev/null
  fi
}

# cairn_venv [EXTRAS] : create .venv (or $CAIRN_VENV) and install the project into it
# (editable, with the comma-separated extras), again only when pyproject.toml is newer than
# the install; puts the venv's bin first on PATH.
cairn_venv() {
  local extras=${1:-} py=${PYTHON:-python3} venv=${CAIRN_VENV:-.venv}
  if [ ! -x "$venv/bin/python" ]; then
    echo "== creating virtual environment $venv"
    "$py" -m venv "$venv"
  fi
  local stamp="$venv/.cairn-installed${extras:+-${extras//,/-}}"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "== installing cairn${extras:+ with extras $extras}"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q -e ".${extras:+[$extras]}"
    touch "$stamp"
  fi
  export PATH="$PWD/$venv/bin:$PATH"
}
