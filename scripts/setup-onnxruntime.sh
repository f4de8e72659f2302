#!/usr/bin/env bash
# Installs the ONNX Runtime shared library hybridb loads at run time, from PyPI's
# onnxruntime wheel, into $XDG_DATA_HOME/hybridb/onnxruntime (default
# ~/.local/share/hybridb/onnxruntime), where hybridb finds it without ORT_DYLIB_PATH.
# Usage: scripts/setup-onnxruntime.sh [DIR]
set -euo pipefail
VERSION=1.31.1
DEST="${1:-${XDG_DATA_HOME:-$HOME/.local/share}/hybridb/onnxruntime}"
LIB="libonnxruntime.so.$VERSION"
if [[ -f "$DEST/$LIB" ]]; then
    echo "onnxruntime $VERSION already installed: $DEST/$LIB"
    exit 0
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --dest "$WORK" "onnxruntime==$VERSION"
WHEEL="$(ls "$WORK"/onnxruntime-*.whl)"
mkdir -p "$DEST"
python3 - "$WHEEL" "$DEST" "$LIB" <<'PY'
import sys, zipfile, os
wheel, dest, lib = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    data = z.read(f"onnxruntime/capi/{lib}")
tmp = os.path.join(dest, lib + ".part")
with open(tmp, "wb") as f:
    f.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, os.path.join(dest, lib))
PY
echo "installed $DEST/$LIB"
