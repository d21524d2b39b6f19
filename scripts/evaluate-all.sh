#!/bin/sh
# Every model figure of the README, into a results folder (tables *.txt, JSON, PNG plots).
# Takes a few hours on 2 cores. Usage: sh scripts/evaluate-all.sh [FOLDER]
set -eu
cd "$(dirname "$0")/.."
OUT=${1:-results}
mkdir -p "$OUT"
IOT=".venv/bin/iotclass"
MAIN="ccit,rf,nba,nba-vol,lstm-cnn,lstm-cnn-all"
run() { name=$1; shift; echo "== $name: iotclass $*" >&2; $IOT "$@" --out "$OUT" | tee "$OUT/$name.txt"; }
run unseen-sentinel   evaluate unseen --data sentinel --models all
run unseen-long       evaluate unseen --data long --models all
run known-sentinel    evaluate known --data sentinel --models "$MAIN"
run known-home        evaluate known --data home --models "$MAIN"
run time-home         evaluate time --data home --models "$MAIN"
run iot-home          evaluate iot --data home --models "$MAIN"
run openset-sentinel  evaluate openset --data sentinel --models nba-vol,lstm-cnn-all
run openset-long      evaluate openset --data long --models nba-vol,lstm-cnn-all
run online-sentinel   evaluate online --data sentinel
run online-home       evaluate online --data home
run sensitivity-long  evaluate sensitivity --data long --models lstm-cnn
run lovo-all          evaluate lovo
run cross-all         evaluate cross
run fusion-known      evaluate fusion-known --folds 3
run fusion-openset    evaluate fusion-openset --no-online
.venv/bin/python -m benchmarks.models | tee "$OUT/latency.json"
