#!/bin/sh
# The README's two screenshots, taken by the operator end-to-end test (headless Chromium on a
# controller with the shipped engine and a real Open vSwitch; root, as `make test`'s e2e tests):
#   docs/img/operator-page.png  the devices page after an unknown device was reviewed and accepted
#   docs/img/review-queue.png   the review queue with that device, before sign-in
# Every screenshot of the run (1400 and 400 px) stays in the artefacts folder it prints.
#
#   sudo sh scripts/readme-screenshots.sh          (PYTHON=... to use another interpreter)
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
out=${IOT_ARTEFACTS:-$(mktemp -d /tmp/iot-readme-shots.XXXXXX)}
IOT_ARTEFACTS=$out "$PYTHON" -m pytest -q -p no:cacheprovider -m e2e tests/test_e2e_operator.py
mkdir -p docs/img
cp "$out/e2e-20-03-devices-after-review.png" docs/img/operator-page.png
cp "$out/e2e-20-03-review.png" docs/img/review-queue.png
echo "docs/img/operator-page.png, docs/img/review-queue.png (from $out)"
