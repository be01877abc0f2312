#!/usr/bin/env bash
# Train the paper's bundle (models/paper-facenet: frozen FaceNet embedding +
# triplet head + logistic, trained on the DFDC crops' fakes, with the paper's
# comparison rows) and record its files in models/manifest.json. It was the
# default until the leave-one-source-out evaluation (README, "Which bundle is
# the default"). Needs ../shared/data/dfdc-faces (research data, not in this
# repository). Seeded: a rerun reproduces the metrics (embeddings are cached
# under ~/.cache/fakewatch; first run ~15 min of extraction on 2 cores, then
# ~5 min).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release -p fakewatch-trainer -- fit \
    --config trainer/configs/paper-facenet-dfdc.json --out models/paper-facenet "$@"
python3 models/convert/record_bundle.py models/paper-facenet models/build_paper.sh
