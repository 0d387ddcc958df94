#!/usr/bin/env bash
# Install what is missing, build Release into build/, then run build/train with the arguments.
# Usage: ./train.sh --config configs/<task>.yaml [key=value ...]
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
s6_setup "${S6_TRAIN_PACKAGES[@]}"
exec build/train "$@"
