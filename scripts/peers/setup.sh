#!/usr/bin/env bash
# Create the peer-benchmark virtual environments at the repository root and install the
# pinned packages: .venv-peers/ (requirements.txt) and, with --milvus25, also
# .venv-peers-milvus25/ (requirements-milvus25.txt). Idempotent: a venv whose
# requirements file is unchanged since its last install is left alone.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

make_venv() {  # make_venv VENV_DIR REQUIREMENTS IMPORTS
  local venv="$1" req="$2" imports="$3"
  local stamp="$venv/.requirements.sha256" want
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
  "$venv/bin/python" -W ignore -c "import $imports"
  echo "$want" > "$stamp"
  echo "ready: $venv"
}

make_venv "$root/.venv-peers" "$here/requirements.txt" \
  "numpy, pyarrow, lancedb, lance, pymilvus, milvus_lite, chromadb"
if [[ "${1:-}" == "--milvus25" ]]; then
  make_venv "$root/.venv-peers-milvus25" "$here/requirements-milvus25.txt" \
    "numpy, pymilvus, milvus_lite"
fi
