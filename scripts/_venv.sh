# Sourced by scripts/dev and scripts/test: create .venv and install a requirements file into it.
# Installs again only when a requirements file changed, so repeated runs start at once.
ensure_venv() {
    local requirements="$1"
    local python="${PYTHON:-python3}"
    if [ ! -x .venv/bin/python ]; then
        echo "erp: creating .venv with $($python --version)"
        "$python" -m venv .venv
    fi
    local stamp=".venv/.installed-$(basename "$requirements" .txt)"
    local digest
    digest=$(cat requirements/*.txt | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
        echo "erp: installing $requirements"
        .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
        echo "$digest" > "$stamp"
    fi
}
