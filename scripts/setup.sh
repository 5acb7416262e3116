#!/usr/bin/env bash
# One-time (idempotent) setup: system packages for the sandbox and the evaluated languages, a venv with a
# CPU torch wheel first (an unpinned torch would pull a multi-GB CUDA build), then codetune and its extras.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="bubblewrap libjavatuples-java libboost-dev libssl-dev sqlite3 nodejs g++ chromium"
command -v javac >/dev/null 2>&1 || APT_PACKAGES="$APT_PACKAGES default-jdk-headless"
if command -v apt-get >/dev/null 2>&1; then
  missing=""
  for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing system packages:$missing"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null \
      || echo "warning: could not install$missing; sandboxed evaluation of some languages will be skipped"
  fi
fi

# HumanEval-X JavaScript/162 requires js-md5; the sandbox's node finds global packages through NODE_PATH.
if command -v npm >/dev/null 2>&1 && [ ! -d "$(npm root -g)/js-md5" ]; then
  npm install -g --silent js-md5@0.8 >/dev/null 2>&1 || echo "warning: npm could not install js-md5 (one JS problem)"
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.codetune-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q torch==2.13.0
  .venv/bin/pip install -q -e ".[dev]" torch==2.13.0
  touch "$stamp"
fi
