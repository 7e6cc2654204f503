#!/usr/bin/env bash
# Print the path of a working CPython 3.10 interpreter (detectron2's PyPI wheel
# `sal-detectron2` is cp310 only), or fail with a hint.
for p in "${PYTHON310:-}" python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10 \
         "$HOME"/.pyenv/versions/3.10*/bin/python3.10 /root/.pyenv/versions/3.10*/bin/python3.10; do
  [ -n "$p" ] || continue
  if "$p" -c 'import sys, venv; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; then
    command -v "$p" 2>/dev/null || echo "$p"
    exit 0
  fi
done
echo "error: CPython 3.10 not found (needed for detectron2's cp310 wheel). Install it (e.g. 'pyenv install 3.10') or set PYTHON310=/path/to/python3.10." >&2
exit 1
