#!/usr/bin/env bash
# The main job on the bundled seed scenario: analyze, plan, check, then run in a throwaway namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
om=".venv/bin/overmount"
seed="scenarios/01-seed-lxd-cgroup.toml"
plan="$(mktemp --suffix=.json)"
trap 'rm -f "$plan"' EXIT

echo "== overmount analyze $seed"
"$om" analyze "$seed"
echo
echo "== overmount plan $seed"
"$om" plan "$seed"
"$om" plan "$seed" --format json -o "$plan"
echo
echo "== overmount check $seed PLAN.json"
"$om" check "$seed" "$plan"
echo
echo "== overmount run $seed"
"$om" run "$seed" --plan "$plan"
