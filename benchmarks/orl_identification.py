"""ORL identification: enrol images 1-5 of each of the 40 people, identify images 6-10.

Prints the accuracy (the right person named, out of 200 queries), how many
queries were Unknown or had no face found, and the enrolment time.

    python benchmarks/orl_identification.py --detector yunet \
        --yunet-model ../shared/models/yunet/face_detection_yunet_2026may.onnx \
        --model models/dlib_resnet_v1.int8.onnx --threshold 0.5
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from edgeface.config import load_config
from edgeface.enrolment import sync_gallery
from edgeface.imageio import load_image
from edgeface.pipeline import Pipeline
from edgeface.voting import VotingParams

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orl", type=Path, default=ROOT.parent / "shared" / "data" / "orl")
    parser.add_argument("--detector", choices=("yunet", "dlib"), default="yunet")
    parser.add_argument("--yunet-model", default=str(ROOT.parent / "shared" / "models" / "yunet" / "face_detection_yunet_2026may.onnx"))
    parser.add_argument("--model", required=True, help="embedder .onnx with its manifest")
    parser.add_argument("--threshold", type=float, required=True, help="Euclidean distance threshold, 0..2")
    args = parser.parse_args()

    # ORL faces fill their 92x112 frames, so faces down to 20 px are kept.
    config = load_config(
        None,
        {
            "detector.backend": args.detector,
            "detector.yunet_model": args.yunet_model,
            "detector.min_face_size": 20,
            "embedder.model": args.model,
            "matching.threshold": args.threshold,
        },
    )
    pipeline = Pipeline.from_config(config)
    people = sorted(p for p in args.orl.iterdir() if p.is_dir())

    with tempfile.TemporaryDirectory() as scratch:
        enrol_dir = Path(scratch) / "people"
        for person in people:
            (enrol_dir / person.name).mkdir(parents=True)
            for i in range(1, 6):
                shutil.copy(person / f"{i}.pgm", enrol_dir / person.name)

        start = time.perf_counter()
        reports = sync_gallery(enrol_dir, Path(scratch) / "gallery", pipeline, 2.0).people
        enrol_seconds = time.perf_counter() - start
        skipped = sum(len(r.skipped) for r in reports)
        gallery = pipeline.load_gallery(Path(scratch) / "gallery")

    params = VotingParams(**config["matching"])
    correct = unknown = no_face = wrong = 0
    for person in people:
        for i in range(6, 11):
            results = pipeline.identify(load_image(person / f"{i}.pgm"), gallery, params)
            if not results:
                no_face += 1
            elif results[0].match.person == person.name:
                correct += 1
            elif results[0].match.person is None:
                unknown += 1
            else:
                wrong += 1

    total = len(people) * 5
    print(f"detector {args.detector}, model {pipeline.model_name}, threshold {args.threshold}")
    print(f"enrolled {len(people)} people from {len(people) * 5 - skipped} photos ({skipped} skipped) in {enrol_seconds:.1f} s")
    print(f"accuracy {correct}/{total} = {correct / total:.1%}; wrong person {wrong}, Unknown {unknown}, no face {no_face}")


if __name__ == "__main__":
    main()
