#!/usr/bin/env bash
# Regenerate every result of docs/evaluation.md: each embedder through
# `edgeface eval`, one model at a time, into out/eval/<model>/<protocol>.
#
# Usage, from the repository root with ../shared beside it:
#   nice -n 10 bash benchmarks/evaluation.sh
#
# Embeddings are cached in out/eval/cache, so a second run only recomputes
# the tables and plots. Delete that folder to embed everything again.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
LFW=${LFW:-../shared/data/lfw}
YUNET=${YUNET:-../shared/models/yunet/face_detection_yunet_2026may.onnx}
OUT=out/eval
CACHE=$OUT/cache

# The models: dlib's ResNet exported offline from its package, MobileFaceNet
# registered from a copy, and CLIP ViT-B/32 with random weights.
if [ ! -f models/dlib_resnet_v1.onnx ]; then
    "$PYTHON" -m export dlib-resnet --out models
fi
if [ ! -f models/MobileFaceNet.json ]; then
    cp ../shared/models/mobilefacenet/MobileFaceNet.onnx models/
    "$PYTHON" -m edgeface model register models/MobileFaceNet.onnx --preset arcface112
fi
if [ ! -f models/clip-vit-b-32-random.int8.onnx ]; then
    "$PYTHON" -m export clip --model ViT-B-32 --random-weights --faces ../shared/data/knn-examples/train --out models
fi

# evaluate NAME MODEL DETECTOR THRESHOLD GRID [extra options]: every protocol of one model.
evaluate() {
    local name=$1 model=$2 detector=$3 threshold=$4 grid=$5
    shift 5
    local common=(--model "$model" --detector "$detector" --yunet-model "$YUNET" --cache "$CACHE" "$@")
    local started=$SECONDS
    "$PYTHON" -m edgeface eval lfw "$LFW" --out "$OUT/$name/lfw" "${common[@]}"
    "$PYTHON" -m edgeface eval grid "$LFW" --out "$OUT/$name/grid" "${common[@]}"
    if [ "$grid" != "0.50:1.00:0.01" ]; then
        "$PYTHON" -m edgeface eval grid "$LFW" --thresholds "$grid" --out "$OUT/$name/grid-$grid" "${common[@]}"
    fi
    "$PYTHON" -m edgeface eval openset "$LFW" --threshold "$threshold" --out "$OUT/$name/openset" "${common[@]}"
    echo "$name: $((SECONDS - started)) s"
}

evaluate dlib-fp32 models/dlib_resnet_v1.onnx dlib 0.40 0.20:0.70:0.01
"$PYTHON" -m edgeface eval scale "$LFW" --out "$OUT/dlib-fp32/scale" --model models/dlib_resnet_v1.onnx --detector dlib --cache "$CACHE"
evaluate mobilefacenet models/MobileFaceNet.onnx yunet 1.05 0.70:1.20:0.01
evaluate dlib-fp32-yunet models/dlib_resnet_v1.onnx yunet 0.40 0.20:0.70:0.01
evaluate dlib-int8 models/dlib_resnet_v1.int8.onnx dlib 0.40 0.20:0.70:0.01
evaluate clip-random models/clip-vit-b-32-random.int8.onnx yunet 0.40 0.50:1.00:0.01 --allow-untrained

# The open set again with a household-sized gallery, the first 10 people of lfw-10.
"$PYTHON" -m edgeface eval openset "$LFW" --people 10 --threshold 0.40 --out "$OUT/dlib-fp32/openset-10-people" --model models/dlib_resnet_v1.onnx --detector dlib --cache "$CACHE"
"$PYTHON" -m edgeface eval openset "$LFW" --people 10 --threshold 0.40 --out "$OUT/dlib-int8/openset-10-people" --model models/dlib_resnet_v1.int8.onnx --detector dlib --cache "$CACHE"
"$PYTHON" -m edgeface eval openset "$LFW" --people 10 --threshold 0.40 --out "$OUT/dlib-fp32-yunet/openset-10-people" --model models/dlib_resnet_v1.onnx --detector yunet --yunet-model "$YUNET" --cache "$CACHE"
"$PYTHON" -m edgeface eval openset "$LFW" --people 10 --threshold 1.05 --out "$OUT/mobilefacenet/openset-10-people" --model models/MobileFaceNet.onnx --detector yunet --yunet-model "$YUNET" --cache "$CACHE"
