"""Extraction benchmark: prints each figure and writes them to JSON (a script, not a test).

Figures (issue: performance):
  throughput  end-to-end extraction from JPEG files vs the bare forward pass of the same model at
              the same batch size, precision and number of compute threads; on CUDA also the share
              of the GPU's bf16 peak. On the CPU it is measured twice: with the forward pass on the
              cores the loader workers leave free (the "loader is not the bottleneck" figure: the
              loader keeps up when it has cores of its own, as beside a GPU), and with the forward
              pass on all cores, the workers competing with it (what a CPU-only run gets).
  memory      peak RSS of an extraction over 1,000 vs 8,000 images (growth must be < 10 %).
  passes      forward passes in a study's outputs / unique (model, images, variant) = 1.00.
  fixed cost  one extraction job in its own process, as the workflow runs it: process start to first
              batch (imports, model build, device lease, loader start, compilation with --compile),
              the forward passes, and teardown (last output written to process exit). With
              --compile it runs twice on one inductor cache folder: the second job loads what the
              first compiled (extraction.compile caches under resources/torch_compile_cache).
  jobs        study level, from a finished run: total wall time of all its jobs (Snakemake's log)
              over the time the extraction jobs spent in forward passes (their `job timing` lines).

Examples:
  python benchmarks/extraction.py --device cpu                       # small CPU form
  python benchmarks/extraction.py --device cuda --models vit_base_patch16_224 convnext_base \
      --images 20000 --batch-size 256 --workers 14 --json gpu.json    # on a GPU machine
  python benchmarks/extraction.py --passes results                    # forward-pass economy only
  python benchmarks/extraction.py --fixed-cost --device cpu [--compile]  # one job's start-up and teardown
  python benchmarks/extraction.py --jobs results                      # after `snakemake --cores 2`
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from beyond_imagenet.extract import extract, split_transform  # noqa: E402
from beyond_imagenet.models import ModelSpec, build_model  # noqa: E402


def make_jpegs(folder: Path, n: int, size=(500, 375), seed: int = 0) -> list[tuple[str, int]]:
    """ImageNet-like JPEGs (ImageNet val averages about 500x375) in one class folder."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (folder / "n01440764").mkdir(parents=True, exist_ok=True)
    base = [Image.fromarray(rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)).resize(size)
            for _ in range(16)]
    samples = []
    for i in range(n):
        name = f"n01440764/img_{i:06d}.JPEG"
        if not (folder / name).exists():
            base[i % 16].save(folder / name, quality=90)
        samples.append((name, 0))
    return samples


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_forward(loaded, device, batch_size: int, seconds: float = 10.0) -> float:
    """Images/s of the network alone on a resident uint8 batch (normalisation included, as in extraction)."""
    _, normalize = split_transform(loaded.transform)
    network = loaded.network.eval().to(device)
    x = torch.randint(0, 255, (batch_size, 3, 224, 224), dtype=torch.uint8, device=device)
    normalize = normalize.to(device) if normalize is not None else (lambda t: t.float())

    def step():
        with torch.inference_mode():
            images = normalize(x)
            if device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    network(images)
            else:
                network(images)

    for _ in range(2):
        step()
    sync(device)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += batch_size
    sync(device)
    return n / (time.perf_counter() - start)


def flops_per_image(loaded) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, 224, 224)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        loaded.network.cpu()(x)
    return float(counter.get_total_flops())


def throughput(args) -> list[dict]:
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    cores = len(os.sched_getaffinity(0))
    if device.type == "cuda":
        thread_counts = [torch.get_num_threads()]
    elif args.threads:
        thread_counts = [args.threads]
    else:  # the loader on cores of its own, then everything sharing all cores
        thread_counts = list(dict.fromkeys([max(1, cores - args.workers), cores]))
    results = []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        results += _throughput(args, device, threads, cores)
    return results


def _throughput(args, device: torch.device, threads: int, cores: int) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data_dir or tmp) / "jpegs"
        samples = make_jpegs(data, args.images)
        for name in args.models:
            spec = ModelSpec.from_config(name, {"source": "timm", "name": name, "pretrained": False})
            loaded = build_model(spec, "paper")
            if args.compile:
                loaded.network = torch.compile(loaded.network)
            flops = flops_per_image(loaded)
            bare = bare_forward(loaded, device, args.batch_size, args.seconds)
            out = Path(tmp) / f"{name}.h5"
            start = time.perf_counter()
            extract(loaded.network, loaded.transform, data, samples, out, {"model": name}, device=device,
                    batch_size=args.batch_size, num_workers=args.workers, shard_size=args.batch_size * 16,
                    progress=False)
            sync(device)
            end_to_end = len(samples) / (time.perf_counter() - start)
            row = {"model": name, "device": str(device), "device_name": torch.cuda.get_device_name(device)
                   if device.type == "cuda" else f"cpu, forward on {threads} of {cores} cores",
                   "compute_threads": threads, "cores": cores,
                   "loader_has_own_cores": device.type == "cuda" or threads + args.workers <= cores,
                   "batch_size": args.batch_size, "workers": args.workers, "images": len(samples),
                   "precision": "bf16-autocast" if device.type == "cuda" else "fp32",
                   "bare_forward_img_s": round(bare, 1), "end_to_end_img_s": round(end_to_end, 1),
                   "ratio_end_to_end_over_bare": round(end_to_end / bare, 3),
                   "gflops_per_image": round(flops / 1e9, 2)}
            if device.type == "cuda":
                row["share_of_bf16_peak"] = round(end_to_end * flops / (args.peak_tflops * 1e12), 3)
            print(f"[throughput] {name} on {row['device_name']}: bare forward {bare:.1f} img/s, "
                  f"end-to-end {end_to_end:.1f} img/s, ratio {row['ratio_end_to_end_over_bare']:.2f}"
                  + (f", {row['share_of_bf16_peak']:.1%} of bf16 peak" if "share_of_bf16_peak" in row else ""))
            results.append(row)
    return results


def _memory_child(n: int, workers: int) -> None:
    """Run one extraction of ``n`` small images with a small model; print peak RSS (MiB)."""
    from torchvision import transforms as T

    with tempfile.TemporaryDirectory() as tmp:
        samples = make_jpegs(Path(tmp) / "jpegs", n, size=(96, 72))
        torch.manual_seed(0)
        network = _SmallNet()
        transform = T.Compose([T.Resize(64), T.CenterCrop(64), T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])
        extract(network, transform, Path(tmp) / "jpegs", samples, Path(tmp) / "out.h5", {"model": "small"},
                batch_size=64, num_workers=workers, shard_size=512, progress=False, features_dtype="float32")
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


class _SmallNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 64, 7, stride=4)
        self.head = torch.nn.Linear(64, 1000)

    def forward(self, x):
        features = self.conv(x).mean((2, 3))
        return self.head(features), features


def memory(args) -> dict:
    peaks = {}
    for n in (1000, 8000):
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(n), "--workers", str(args.workers)],
                             check=True, capture_output=True, text=True)
        peaks[n] = float(out.stdout.strip().splitlines()[-1])
    growth = peaks[8000] / peaks[1000] - 1
    print(f"[memory] peak RSS: 1,000 images {peaks[1000]:.0f} MiB, 8,000 images {peaks[8000]:.0f} MiB, "
          f"growth {growth:+.1%} ({'PASS' if growth < 0.10 else 'FAIL'}: < 10 %)")
    return {"peak_rss_mib_1000": peaks[1000], "peak_rss_mib_8000": peaks[8000], "growth": round(growth, 4)}


def passes(results_dir: str) -> dict:
    """Forward passes recorded in a study's outputs vs unique (model, weights, image list, variant, image).

    The CKA pass (docs/evaluations.md §9, in each model's extraction job) runs over its
    ``n_images`` (Gram matrices of random batches are formed in forward hooks, for every model on
    the same batches): it is counted separately, as extra passes over images the standard
    extraction already ran."""
    import h5py

    from beyond_imagenet.extract import read_outputs

    total, unique = 0, set()
    files = sorted(Path(results_dir).glob("**/extracted/*/*.h5"))
    for path in files:
        out = read_outputs(path, fields=("ids", "skipped_ids"))
        attrs = out["attrs"]
        key = (str(attrs.get("model")), str(attrs.get("weights")), str(attrs.get("protocol")),
               str(attrs.get("manifest_fingerprint")), str(attrs.get("variant", "")))
        ids = [*out["ids"], *out["skipped_ids"]]
        total += len(ids)
        unique.update((key, i) for i in ids)
    ratio = total / max(len(unique), 1)
    cka_passes, cka_repeats = 0, 0
    for path in sorted(Path(results_dir).glob("**/metrics/cka_*.h5")):
        with h5py.File(path, "r") as f:
            models = json.loads(f.attrs["models"])
            ids = [x.decode() if isinstance(x, bytes) else x for x in f["ids"][()]] if "ids" in f else []
            fingerprint = str(f.attrs.get("manifest_fingerprint"))
        for identity in models.values():
            key = (str(identity["model"]), str(identity["weights"]), str(identity["protocol"]), fingerprint, "")
            cka_passes += len(ids)
            cka_repeats += sum((key, i) in unique for i in ids)
    print(f"[passes] {len(files)} output files: {total} forward passes / {len(unique)} unique "
          f"(model, image, variant) = {ratio:.2f}")
    if cka_passes:
        print(f"[passes] plus the CKA pass (run by the extraction jobs): {cka_passes} forward passes, {cka_repeats} of them over "
              f"images the extraction also ran ({cka_repeats / max(total, 1):.1%} on top of the extraction)")
    return {"files": len(files), "passes": total, "unique": len(unique), "ratio": round(ratio, 4),
            "cka_passes": cka_passes, "cka_repeated_passes": cka_repeats}


def _fixed_cost_child(args) -> None:
    """One extraction job's work, as scripts/extract_outputs.py does it: imports, build, lease, extract."""
    from beyond_imagenet import extraction_jobs  # noqa: F401  (the job's imports)
    from beyond_imagenet.devices import lease_device
    from beyond_imagenet.workflow import setup  # noqa: F401

    if args.compile:
        extraction_jobs.enable_compile_cache(args.compile_cache)
    data = Path(args.data_dir)
    samples = make_jpegs(data, args.images)
    spec = ModelSpec.from_config(args.models[0], {"source": "timm", "name": args.models[0], "pretrained": False})
    loaded = build_model(spec, "paper")
    if args.compile:
        loaded.network = torch.compile(loaded.network)
    timings: dict = {}
    with lease_device(args.device) as device, tempfile.TemporaryDirectory() as tmp:
        extract(loaded.network, loaded.transform, data, samples, Path(tmp) / "out.h5", {"model": spec.name},
                device=device, batch_size=args.batch_size, num_workers=args.workers, progress=False, timings=timings)
    timings["end"] = time.time()
    print(json.dumps(timings))


def fixed_cost(args) -> dict:
    """Time one extraction job in a fresh process (twice on one compile cache with --compile)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        make_jpegs(Path(tmp) / "jpegs", args.images)  # written before the clock starts
        for run in range(2 if args.compile else 1):
            cmd = [sys.executable, __file__, "--fixed-cost-child", "--device", args.device, "--models", args.models[0],
                   "--images", str(args.images), "--batch-size", str(args.batch_size), "--workers", str(args.workers),
                   "--data-dir", str(Path(tmp) / "jpegs"), "--compile-cache", str(Path(tmp) / "inductor")]
            if args.compile:
                cmd.append("--compile")
            launch = time.time()
            out = subprocess.run(cmd, check=True, capture_output=True, text=True)
            exited = time.time()
            t = json.loads(out.stdout.strip().splitlines()[-1])
            row = {"model": args.models[0], "device": args.device, "images": args.images, "batch_size": args.batch_size,
                   "compile": bool(args.compile), "compile_cache": ("cold" if run == 0 else "warm") if args.compile else "",
                   "start_to_first_batch_s": round(t["first_batch"] - launch, 3),
                   "forward_s": round(t["forward_s"], 3), "first_forward_s": round(t["first_forward_s"], 3),
                   "teardown_s": round(exited - t["end"], 3),
                   "job_s": round(exited - launch, 3)}
            print(f"[fixed cost] {row['model']} on {args.device}{' compiled, ' + row['compile_cache'] + ' cache' if args.compile else ''}: "
                  f"start to first batch {row['start_to_first_batch_s']:.2f} s, forward passes {row['forward_s']:.2f} s "
                  f"({args.images} images; first pass {row['first_forward_s']:.2f} s), teardown {row['teardown_s']:.2f} s, job {row['job_s']:.2f} s")
            rows.append(row)
    return {"runs": rows}


def _snakemake_log(results_dir: Path) -> Path | None:
    """The newest Snakemake log of the run that wrote ``results_dir``: under ``.snakemake/log`` of
    the workflow's folder, the nearest folder above ``results_dir`` that has one (a study's
    ``results_dir`` may be ``results``, ``results/paper`` or anything else)."""
    for folder in Path(results_dir).resolve().parents:
        logs = sorted((folder / ".snakemake" / "log").glob("*.snakemake.log"))
        if logs:
            return logs[-1]
    return None


def job_figures(results_dir: str | Path, log_text: str | None = None) -> dict:
    """Total job wall time of a run (Snakemake's log) / time its extraction jobs spent in forward
    passes, and each extraction job's fixed cost, from their ``job timing`` log lines."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from study_walltime import rule_times

    results_dir = Path(results_dir)
    if log_text is None:
        path = _snakemake_log(results_dir)
        log_text = path.read_text() if path else ""
    rules = rule_times(log_text)
    total_jobs = sum(s for _, s in rules.values())
    timings = []
    for path in sorted((results_dir / "logs" / "extract_outputs").glob("*/*.log")):
        for line in path.read_text().splitlines():
            if "job timing " in line:
                timings.append(json.loads(line.split("job timing ", 1)[1]))
    forward = sum(t["forward_s"] for t in timings)
    computed = [t for t in timings if "start_to_first_batch_s" in t]
    figures = {"jobs": sum(n for n, _ in rules.values()), "total_job_wall_s": round(total_jobs, 1),
               "extraction_jobs": len(timings), "extraction_job_wall_s": round(sum(t["job_s"] for t in timings), 1),
               "forward_s": round(forward, 1),
               "job_wall_over_forward": round(total_jobs / forward, 1) if forward else None,
               "median_start_to_first_batch_s": round(float(np.median([t["start_to_first_batch_s"] for t in computed])), 2)
               if computed else None,
               "median_teardown_s": round(float(np.median([t["teardown_s"] for t in timings if "teardown_s" in t])), 2)
               if timings else None}
    print(f"[jobs] {figures['jobs']} jobs, {figures['total_job_wall_s']} s summed job wall time; "
          f"{figures['extraction_jobs']} extraction jobs ({figures['extraction_job_wall_s']} s) spent "
          f"{figures['forward_s']} s in forward passes: job wall / forward = {figures['job_wall_over_forward']}; "
          f"median start to first batch {figures['median_start_to_first_batch_s']} s")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--models", nargs="+", default=None, help="timm model names (random weights)")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=max(1, min(8, (os.cpu_count() or 2) - 1)))
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the bare-forward timing")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU: torch threads of the forward pass in both measurements (default: "
                             "cores - workers, then all cores)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100 SXM: 989)")
    parser.add_argument("--data-dir", default=None, help="where to write the JPEGs (default: a temp dir)")
    parser.add_argument("--passes", metavar="RESULTS_DIR", help="only count forward passes in a study's outputs")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--json", default="benchmarks/extraction.json")
    parser.add_argument("--fixed-cost", action="store_true", help="only time one extraction job's start-up and teardown")
    parser.add_argument("--jobs", metavar="RESULTS_DIR", help="only the study-level job wall / forward ratio of a run")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--fixed-cost-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compile-cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        _memory_child(args.memory_child, args.workers)
        return
    if args.fixed_cost_child:
        _fixed_cost_child(args)
        return
    report: dict = {}
    if args.passes or args.jobs:
        if args.passes:
            report["passes"] = passes(args.passes)
        if args.jobs:
            report["jobs"] = job_figures(args.jobs)
    elif args.fixed_cost:
        cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
        args.models = args.models or (["vit_base_patch16_224"] if cuda else ["convnext_atto"])
        args.images = args.images or (2048 if cuda else 64)
        args.batch_size = args.batch_size or (256 if cuda else 32)
        report["fixed_cost"] = fixed_cost(args)
    else:
        cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
        args.models = args.models or (["vit_base_patch16_224", "convnext_base"] if cuda else ["convnext_atto"])
        args.images = args.images or (20000 if cuda else 512)
        args.batch_size = args.batch_size or (256 if cuda else 32)
        report["throughput"] = throughput(args)
        if not args.skip_memory:
            report["memory"] = memory(args)
        if Path("results").is_dir():
            report["passes"] = passes("results")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
