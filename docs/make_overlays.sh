#!/usr/bin/env bash
# The pictures in docs/: overlay frames of a real talking head and a DFDC fake through
# `fakewatch run` (no pacing, so every frame is analysed in order), the last
# of N frames kept and scaled to 480 px wide. Needs ../shared (research data)
# and GStreamer's tools (.ci/deps).
#   bash docs/make_overlays.sh [FAKEWATCH]
set -euo pipefail
cd "$(dirname "$0")/.."
fw=${1:-target/release/fakewatch}
media=../shared/data/media
frames=60
shot() {
  local src=$1 out=$2 dir
  dir=$(mktemp -d)
  "$fw" run --source "$src" --no-pace --max-frames "$frames" --sink "png-dir:$dir" \
      --events "$dir/events.ndjson" --stats-interval 0 >/dev/null
  last=$(ls "$dir"/*.png | sort | tail -1)
  gst-launch-1.0 -q filesrc location="$last" ! pngdec ! videoconvert ! videoscale \
      ! video/x-raw,width=480,pixel-aspect-ratio=1/1 ! pngenc ! filesink location="$out"
  grep '"summary"' "$dir/events.ndjson" | python3 -c 'import json,sys; e=json.load(sys.stdin); print(sys.argv[1], e["label"], e["score"])' "$out"
  rm -rf "$dir"
}
shot "$media/talking-heads/retalking_1.mp4" docs/overlay-real-talking-head.png
shot "$media/dfdc-sample-videos/abqwwspghj.mp4" docs/overlay-dfdc-fake.png
# The scan explanation of the same DFDC fake (`fakewatch scan --explain`):
# its track's P(fake) over the 25 sampled frames and its three most
# suspicious faces.
dir=$(mktemp -d)
"$fw" scan --explain "$dir" "$media/dfdc-sample-videos/abqwwspghj.mp4"
cp "$dir"/000-abqwwspghj.png docs/explain-dfdc-fake.png
rm -rf "$dir"
# The same clip with the sequence bundle (models/default-temporal): per-face scores
# (thick) and each track's score fused with its GRU (thin) over two runs of 16 frames.
dir=$(mktemp -d)
"$fw" scan --bundle models/default-temporal --explain "$dir" "$media/dfdc-sample-videos/abqwwspghj.mp4"
cp "$dir"/000-abqwwspghj.png docs/explain-dfdc-fake-temporal.png
rm -rf "$dir"
