"""extraction.split benchmark: one dataset's extraction in K parallel part processes and a merge vs one
process (a script, not a test).

Each part runs in its own process, as its part job would (on a GPU machine: one GPU each; here on the
CPU: ``--threads`` compute threads each), all K at once; then the merge (no model) writes the file.
Prints the wall times (unsplit process and its extraction; each part's extraction, the parts' wall
time with process start-up; the merge; the split total), the speed-up, and whether the two files are
byte-identical (sha256).

  python benchmarks/split_extraction.py --images 256 --parts 2 --threads 1   # 2-core CPU form
  python benchmarks/split_extraction.py --device cuda --images 50000 --parts 4 --batch-size 256
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, sys, time
import timm, torch
from torchvision import transforms as T
from beyond_imagenet.extract import extract, extract_part
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
torch.manual_seed(0)
model = timm.create_model(args["model"], pretrained=False).eval()

class Net(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m
    def forward(self, x):
        f = self.m.forward_head(self.m.forward_features(x), pre_logits=True)
        return self.m.get_classifier()(f), f

transform = T.Compose([T.Resize(args["size"]), T.CenterCrop(args["size"]), T.ToTensor(),
                       T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
samples = [tuple(s) for s in args["samples"]]
kw = dict(device=torch.device(args["device"]), batch_size=args["batch_size"], num_workers=args["workers"],
          shard_size=args["shard_size"], progress=False)
attrs = {"model": args["model"], "dataset": "bench"}
t0 = time.perf_counter()
if args["part"]:
    record = extract_part(Net(model), transform, args["root"], samples, args["out"], attrs, part=args["part"],
                          parts=args["parts"], **kw)
    json.dump(record, open(args["record"], "w"))
else:
    extract(Net(model), transform, args["root"], samples, args["out"], attrs, reuse=True, **kw)
print(time.perf_counter() - t0)
"""


def make_images(root: Path, n: int) -> list[tuple[str, int]]:
    from PIL import Image

    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        (root / f"c{i % 10}").mkdir(parents=True, exist_ok=True)
        name = f"c{i % 10}/{i:05d}.jpg"
        Image.fromarray(rng.integers(0, 255, (160, 200, 3), dtype=np.uint8)).save(root / name)
        samples.append((name, i % 10))
    return samples


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--parts", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="compute threads of each part process")
    parser.add_argument("--model", default="convnext_atto")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from beyond_imagenet.extract import merge_parts

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        samples = make_images(tmp / "images", args.images)
        base = {"model": args.model, "size": args.size, "batch_size": args.batch_size, "shard_size": args.shard_size,
                "workers": args.workers, "device": args.device, "samples": samples, "root": str(tmp / "images")}

        def child(**extra):
            return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps({**base, **extra})],
                                    stdout=subprocess.PIPE, text=True)

        t0 = time.perf_counter()
        one = child(part=0, threads=args.threads * args.parts, out=str(tmp / "a" / "bench.h5"))
        unsplit_extract_s = float(one.communicate()[0].strip().splitlines()[-1])
        unsplit_s = time.perf_counter() - t0

        out = tmp / "b" / "bench.h5"
        t0 = time.perf_counter()
        procs = [child(part=k, parts=args.parts, threads=args.threads, out=str(out), record=str(tmp / f"part{k}.json"))
                 for k in range(1, args.parts + 1)]
        part_s = [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        parts_done = time.perf_counter() - t0
        records = [json.loads((tmp / f"part{k}.json").read_text()) for k in range(1, args.parts + 1)]
        t1 = time.perf_counter()
        merge_parts(records, samples, out, {"model": args.model, "dataset": "bench"}, root=tmp / "images")
        merge_s = time.perf_counter() - t1
        split_s = time.perf_counter() - t0
        same = hashlib.sha256((tmp / "a" / "bench.h5").read_bytes()).hexdigest() == \
            hashlib.sha256(out.read_bytes()).hexdigest()
        figures = {"images": args.images, "parts": args.parts, "model": args.model, "device": args.device,
                   "unsplit_s": round(unsplit_s, 2), "unsplit_extract_s": round(unsplit_extract_s, 2),
                   "parts_s": [round(s, 2) for s in part_s],
                   "parts_wall_s": round(parts_done, 2), "merge_s": round(merge_s, 3), "split_s": round(split_s, 2),
                   "speedup": round(unsplit_s / split_s, 2), "byte_identical": same,
                   "file_mb": round(out.stat().st_size / 2**20, 2)}
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
