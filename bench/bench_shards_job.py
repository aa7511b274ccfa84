"""Throughput of the degradation-shards job over >= 50 real photos in a moto S3 server on a local Ray.

    python bench/bench_shards_job.py [--copies 7] [--crop 224] [--pairs 4] [--images-per-shard 4]

The pristine set is the photos shipped inside scikit-image / scikit-learn / matplotlib, each in several
deterministic variants (original, mirrored, flipped, rotated, four 80 % corner crops) written as PNG to
``s3://pristine/photos/``. Each kind (qualiclip, sr) runs twice into fresh prefixes: the cold run includes
starting Ray's worker processes (importing torch and pyiqa), the warm one is the steady state. Prints
images/s and samples/s of each run, and the machine (platform, CPU model, cores, load average).
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from PIL import Image, ImageOps  # noqa: E402

from bench._machine import describe_machine  # noqa: E402
from iqa_plugin.testing import real_photo_paths  # noqa: E402


def _corner(image: Image.Image, index: int) -> Image.Image:
    w, h = image.size
    cw, ch = int(w * 0.8), int(h * 0.8)
    x, y = (0 if index % 2 == 0 else w - cw), (0 if index < 2 else h - ch)
    return image.crop((x, y, x + cw, y + ch))


VARIANTS = (
    lambda im: im,
    ImageOps.mirror,
    ImageOps.flip,
    lambda im: im.rotate(180),
    lambda im: _corner(im, 0),
    lambda im: _corner(im, 1),
    lambda im: _corner(im, 2),
    lambda im: _corner(im, 3),
)


def pristine_set(copies: int) -> dict[str, bytes]:
    """``len(photos) * copies`` deterministic PNG variants of the packaged photos."""
    files = {}
    for photo in real_photo_paths():
        with Image.open(photo) as opened:
            image = opened.convert("RGB")
        for index, variant in enumerate(VARIANTS[:copies]):
            buffer = io.BytesIO()
            variant(image).save(buffer, format="PNG", compress_level=1)
            files[f"{photo.stem}_v{index}.png"] = buffer.getvalue()
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=7, help="variants per packaged photo (<= 8)")
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--hr-size", type=int, default=256)
    parser.add_argument("--images-per-shard", type=int, default=4)
    args = parser.parse_args()

    import s3fs
    from moto.server import ThreadedMotoServer

    from ray_jobs.runtime import ensure_ray
    from ray_jobs.shards.config import ShardsJobConfig
    from ray_jobs.shards.job import run_shards_job

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_ENDPOINT_URL=endpoint,
                      AWS_DEFAULT_REGION="us-east-1")  # fmt: skip
    fs = s3fs.S3FileSystem(key="bench", secret="bench", client_kwargs={"endpoint_url": endpoint})
    fs.mkdir("pristine")
    fs.mkdir("shards")
    files = pristine_set(args.copies)
    for name, data in files.items():
        fs.pipe(f"pristine/photos/{name}", data)
    print(f"machine: {describe_machine()}")
    print(f"pristine: {len(files)} real photos ({sum(map(len, files.values())) / 1e6:.1f} MB PNG) in moto S3")

    results = []
    try:
        with ensure_ray(log=lambda line: None):
            for kind in ("qualiclip", "sr"):
                for run in ("cold", "warm"):
                    config = ShardsJobConfig(
                        source="s3://pristine/photos/", out=f"s3://shards/{kind}-{run}/", kind=kind, crop=args.crop,
                        hr_size=args.hr_size, samples_per_image=args.pairs, images_per_shard=args.images_per_shard,
                    )  # fmt: skip
                    manifest = run_shards_job(config, progress=lambda line: None)
                    results.append((kind, run, manifest))
    finally:
        server.stop()
    print(f"\n{'kind':<10} {'run':<5} {'images':>6} {'samples':>7} {'shards':>6} {'MB':>6} {'s':>7} "
          f"{'images/s':>9} {'samples/s':>9}")  # fmt: skip
    for kind, run, manifest in results:
        counts, stats = manifest["counts"], manifest["run"]
        megabytes = sum(s["bytes"] for s in manifest["shards"]) / 1e6
        print(f"{kind:<10} {run:<5} {counts['images_used']:>6} {counts['samples']:>7} {counts['shards']:>6} "
              f"{megabytes:>6.1f} {stats['seconds']:>7.1f} {stats['images_per_s']:>9.2f} {stats['samples_per_s']:>9.2f}")  # fmt: skip
    print(f"(crop {args.crop}, {args.pairs} samples per image, SR patch {args.hr_size}, "
          f"{args.images_per_shard} images per shard; Ray num_cpus={max(4, os.cpu_count() or 1)})")  # fmt: skip


if __name__ == "__main__":
    main()
