"""The Markdown report of ``python -m benchmarks.bench``, built from its results dictionary."""

from __future__ import annotations

SECTIONS = (
    "## Machine and load",
    "## End to end: edgeface against face_recognition",
    "## Per-stage latency",
    "## Daemon loop and peak memory",
    "## ONNX Runtime session options",
    "## Gallery scaling",
    "## Enrolment and gallery load",
    "## Raspberry Pi estimates",
)

PI_SLOWDOWN = {
    "Raspberry Pi 4 (Cortex-A72, 1.8 GHz)": (3.1, 5.7),
    "Raspberry Pi 5 (Cortex-A76, 2.4 GHz)": (1.7, 2.5),
}
"""How many times slower one Pi core is than one core of the 2-core AMD EPYC (Zen 4) development machine.

There, benchmarks/prime_events.c counted primes at 4,600 events per CPU
second on one thread. Published ``sysbench cpu --threads=1`` rates are
1,478 and 812 events/s for the Pi 4 and 2,737 and 1,847 for the Pi 5
(leoncode.co.uk's Raspberry Pi benchmarks and zbotic.in's Pi 5 review).
Each range is this machine's rate over those two rates.

NOTE: an integer benchmark understates the gap for the model stages, which
use AVX-512 here and 128-bit NEON on the Pi, so these estimates are more
likely too fast than too slow. Rerun on a Pi to replace them.
"""

def format_report(results: dict) -> str:
    """Return the whole report; a section without results is marked as not measured."""
    parts = [
        "# edgeface benchmark",
        "",
        f"Command: `{results.get('command', '?')}`, {results.get('date', '?')}"
        + (f", {results['seconds'] / 60:.1f} minutes" if "seconds" in results else "")
        + (" (--quick: no 1M gallery, no CLIP)" if results.get("quick") else ""),
        "",
    ]
    writers = (
        _machine,
        _comparison,
        _stages,
        _loops,
        _session_options,
        _scaling,
        _enrolment,
        _pi_estimates,
    )
    for title, writer in zip(SECTIONS, writers):
        parts.append(title)
        parts.append("")
        try:
            parts.extend(writer(results))
        except KeyError as missing:
            parts.append(f"Not measured in this run (no {missing} in the results).")
        parts.append("")
    return "\n".join(parts)


def _ms(summary: dict) -> str:
    return f"{summary['median']:.1f} / {summary['p95']:.1f}"


def _megabytes(count: float) -> str:
    return f"{count / 1e6:.1f}"


def _machine(results: dict) -> list[str]:
    machine = results["machine"]
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items())
    load = results["load"]
    lines = [
        f"- CPU: {machine['cpu']}, {machine['logical_cpus']} logical CPUs; {machine['system']}; Python {machine['python']}",
        f"- {versions}",
        f"- 1-minute load average: {load['start'][0]:.2f} at the start, {load.get('end', [float('nan')])[0]:.2f} at the end "
        "(2 CPUs: a load above 2 means other processes were waiting for a CPU)",
        "",
        "| section | seconds | load before | load after |",
        "|---|---:|---:|---:|",
    ]
    for name, section in load.items():
        if isinstance(section, dict):
            lines.append(f"| {name} | {section['seconds']:.0f} | {section['before']:.2f} | {section['after']:.2f} |")
    return lines


def _comparison(results: dict) -> list[str]:
    comparison = results["comparison"]
    lines = [
        "Each frame goes through every pipeline before the next frame, in a rotating order. "
        "Times are per frame and include decoding. The wall ratio is the baseline's total time over the pipeline's; "
        "the CPU ratio is the same for CPU time (the baseline is the first row).",
    ]
    for set_name, data in comparison["sets"].items():
        lines += [
            "",
            f"**{set_name}** ({data['frames']} frames, decode median {data['decode_ms']['median']:.1f} ms)",
            "",
            "| pipeline | faces found | ms/frame median / p95 | frames/s | CPU s / wall s | named faces "
            "| speed-up vs baseline (wall) | CPU time saved vs baseline |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        baseline_cpu = next(iter(data["pipelines"].values()))["cpu_seconds"]
        for name, summary in data["pipelines"].items():
            ratio = data["ratios"].get(name)
            ratio_text = f"{ratio:.2f}x" if ratio is not None else "1.00x (baseline)"
            fps = summary["frames"] / summary["total_seconds"]
            cpu_ratio = baseline_cpu / summary["cpu_seconds"] if summary["cpu_seconds"] else float("nan")
            lines.append(
                f"| {name} | {summary['faces']} | {_ms(summary['end_to_end'])} | {fps:.1f} | "
                f"{summary['cpu_seconds']:.1f} / {summary['total_seconds']:.1f} | {summary['named']} | {ratio_text} | "
                f"{cpu_ratio:.2f}x |"
            )
    return lines


def _stages(results: dict) -> list[str]:
    stages = results["stages"]
    lines = ["Milliseconds, median / p95.", "", "| stage | what | ms |", "|---|---|---:|"]
    for name, summary in stages["decode"].items():
        lines.append(f"| decode | {name} frame ({summary['count']}) | {_ms(summary)} |")
    for name, summary in stages["detect"].items():
        lines.append(f"| detect | {name} | {_ms(summary)} |")
    for label, summary in stages["models"].items():
        lines.append(f"| align | {label} | {_ms(summary['align'])} |")
    for label, summary in stages["models"].items():
        lines.append(f"| embed | {label}, 1 face per call | {_ms(summary['embed'])} |")
    lines.append(
        f"| search + vote | {stages['gallery_vectors']} vectors, k2 = 5 | {_ms(stages['search_vote'])} |"
    )
    baseline = results.get("comparison", {}).get("sets", {}).get("video", {}).get("pipelines", {})
    for name, summary in baseline.items():
        if name.startswith("face_recognition"):
            for stage, values in summary["stages"].items():
                lines.append(f"| {stage} | baseline, per video frame | {_ms(values)} |")
    lines += ["", f"Align and embed: {stages['faces']} faces found by YuNet (the largest per frame or photo)."]
    return lines


def _loops(results: dict) -> list[str]:
    lines = [
        "The door daemon's per-frame step (detect, quality gate, track, embed undecided tracks, search, vote, decide) "
        "for edgeface, the face_recognition calls for the baseline, over the whole video; "
        "one process per row, peak resident memory (VmHWM) of that process.",
        "",
        "| setup | frames | faces | frames/s | CPU ms/frame | peak memory (MB) | load before / after |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in results["loops"]:
        if "error" in row:
            lines.append(f"| {row['label']} | failed: {' '.join(row['error'])} | | | | | |")
            continue
        lines.append(
            f"| {row['label']} | {row['frames']} | {row['faces']} | {row['fps']:.1f} | "
            f"{row['cpu_seconds'] * 1000.0 / max(row['frames'], 1):.0f} | {_megabytes(row['peak_rss_bytes'])} | {row['load'][0]:.2f} / {row['load'][1]:.2f} |"
        )
    return lines


def _session_options(results: dict) -> list[str]:
    options = results["session_options"]
    best = options["best"]
    lines = [
        f"dlib ResNet fp32, {options['faces']} faces one per call, median of {options['rounds']} rounds; "
        "threads 0 is ONNX Runtime's default.",
        "",
        "| intra-op threads | graph optimisation | execution mode | ms/face |",
        "|---:|---|---|---:|",
    ]
    for row in sorted(options["rows"], key=lambda row: row["ms_per_face"]):
        lines.append(f"| {row['threads']} | {row['level']} | {row['mode']} | {row['ms_per_face']:.2f} |")
    lines += ["", f"Fastest: threads {best['threads']}, {best['level']}, {best['mode']}."]
    spinning = options.get("spinning")
    if spinning:
        lines += [
            "",
            f"Idle-thread spinning (`session.intra_op.allow_spinning`), default threads: one embedding then one "
            f"dlib HOG detection per frame, {spinning[0]['frames']} video frames, medians.",
            "",
            "| idle threads spin | embed ms | detect ms, right after | CPU s |",
            "|---|---:|---:|---:|",
        ]
        for row in spinning:
            lines.append(
                f"| {'yes (ONNX Runtime default)' if row['spinning'] else 'no (edgeface)'} | {row['embed_ms']:.1f} | "
                f"{row['detect_ms']:.1f} | {row['cpu_seconds']:.2f} |"
            )
    return lines


def _scaling(results: dict) -> list[str]:
    lines = [
        "Synthetic clustered unit vectors (128-d, 5 per person); one query per search, k = 5, "
        "with FAISS's default OpenMP threads unless the column says 1. "
        "Memory is the serialised index size. Recall is the share of the exact index's 5 neighbours that IVF returns.",
        "",
        "| vectors | exact ms median / p95 | exact, 1 OpenMP thread | exact MB | IVF lists / nprobe "
        "| IVF ms median / p95 | IVF MB | IVF build s | IVF recall@5 |",
        "|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for row in results["scaling"]:
        flat, ivf = row["flat"], row["ivf"]
        lines.append(
            f"| {row['size']:,} | {_ms(flat['latency_ms'])} | {_ms(flat['latency_one_thread_ms'])} | "
            f"{_megabytes(flat['serialized_bytes'])} | "
            f"{ivf['lists']} / {ivf['nprobe']} | {_ms(ivf['latency_ms'])} | {_megabytes(ivf['serialized_bytes'])} | "
            f"{ivf['build_seconds']:.1f} | {ivf['recall_at_k'] * 100:.1f} % |"
        )
    return lines


def _enrolment(results: dict) -> list[str]:
    lines = [
        "LFW photos (first photos of the first people by name), enrolled with the dlib ResNet fp32 model "
        "into a new gallery; load is `Gallery.load` of the saved file, median / p95 of 5.",
        "",
        "| detector | people | photos | vectors enrolled | photos/s | gallery file (MB) | load ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for detector, rows in results["enrolment"].items():
        for row in rows:
            lines.append(
                f"| {detector} | {row['people']} | {row['photos']} | {row['vectors']} | {row['photos_per_second']:.1f} | "
                f"{_megabytes(row['gallery_bytes'])} | {_ms(row['load_ms'])} |"
            )
    return lines


def _pi_estimates(results: dict) -> list[str]:
    """Scale each loop's CPU time per frame by each Pi's slowdown range; estimates, not measurements."""
    lines = [
        "ESTIMATES, not measurements: the CPU milliseconds per frame of each loop above, multiplied "
        "by the slowdown range of one Pi core against one core here (basis in docs/benchmarks.md). "
        "CPU time is used because it depends far less on the load of this shared machine than wall time.",
        "",
        "| setup | CPU ms/frame here | "
        + " | ".join(f"{pi}: estimated frames/s" for pi in PI_SLOWDOWN)
        + " |",
        "|---|---:|" + "---:|" * len(PI_SLOWDOWN),
    ]
    for row in results["loops"]:
        if "error" in row or not row.get("frames"):
            continue
        cpu_ms = row["cpu_seconds"] * 1000.0 / row["frames"]
        estimates = [f"{1000.0 / (cpu_ms * high):.1f} to {1000.0 / (cpu_ms * low):.1f}" for low, high in PI_SLOWDOWN.values()]
        lines.append(f"| {row['label']} | {cpu_ms:.0f} | " + " | ".join(estimates) + " |")
    return lines
