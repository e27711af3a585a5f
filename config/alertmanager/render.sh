#!/bin/sh
# Writes an Alertmanager configuration with every ${NAME} replaced by the environment
# variable NAME (unset: empty), then runs Alertmanager with the rest of the arguments:
#   render.sh TEMPLATE OUTPUT [alertmanager flags...]
# POSIX sh and awk only, so it runs in the busybox-based Alertmanager image.
set -eu
template=$1
output=$2
shift 2
awk '{
  while (match($0, /\$\{[A-Z0-9_]+\}/)) {
    name = substr($0, RSTART + 2, RLENGTH - 3)
    $0 = substr($0, 1, RSTART - 1) ENVIRON[name] substr($0, RSTART + RLENGTH)
  }
  print
}' "$template" > "$output"
[ "$#" -eq 0 ] || exec "$@"
