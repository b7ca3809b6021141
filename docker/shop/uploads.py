#!/usr/bin/env python3
"""Generate the sample shop's uploads tree (product images and a few other files), deterministically.

    python docker/shop/uploads.py DIR [--products N] [--size 100MiB] [--seed 42]

Writes under DIR:

* ``products/p%06d.jpg`` for product ids 1..N: random bytes between a JPEG/JFIF header and an EOI
  marker (``file`` calls them JPEG image data; they are incompressible like real photos), 5-200 KiB;
* ``README.txt``; ``invoices/2026/10/inv-0001.txt``, ``inv-0002.txt``; ``invoices/2026/11/inv-0001.txt``
  to ``inv-0003.txt``; ``pages/about us.txt`` and ``pages/größentabelle.txt`` (a space and non-ASCII
  in names, on purpose);
* ``cache/tmp-0001.tmp``: a file backup policies exclude (pattern ``cache/tmp-*.tmp``).

Sizes: ``--products N`` alone draws each image size uniformly from 5-200 KiB (mean 102.5 KiB);
``--size S`` alone picks N so the images total about S; both together keep N and centre the sizes on
S/N (which must lie within 5-200 KiB). Default: 50 products (the products of ``seed.py --scale 1``).

Deterministic: the same --seed and product id always give the same bytes, whatever N is, so a larger
tree is a superset of a smaller one. Files are rewritten on every run; nothing else in DIR is touched.
Memory stays flat (one file of at most 200 KiB at a time). Stdlib only.
"""

from __future__ import annotations

import argparse
import random
import re
import struct
import sys
import time
from pathlib import Path

KIB = 1024
MIN_IMAGE = 5 * KIB
MAX_IMAGE = 200 * KIB
MEAN_IMAGE = (MIN_IMAGE + MAX_IMAGE) / 2
DEFAULT_PRODUCTS = 50
EXCLUDED_FILE = "cache/tmp-0001.tmp"

_UNITS = {"": 1, "b": 1, "k": KIB, "kib": KIB, "kb": 1000, "m": KIB**2, "mib": KIB**2, "mb": 1000**2,
          "g": KIB**3, "gib": KIB**3, "gb": 1000**3, "t": KIB**4, "tib": KIB**4, "tb": 1000**4}


def parse_size(text: str) -> int:
    """Parse ``100MiB``, ``1GiB``, ``500MB``, ``1048576`` into bytes (K/M/G alone are binary)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (examples: 100MiB, 1GiB, 500MB)")
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value < 1:
        raise ValueError(f"size must be positive: {text!r}")
    return value


def size_range(products: int | None, total: int | None) -> tuple[int, int, int]:
    """(N, smallest, largest image size) for the options given; ValueError if they cannot be met."""
    if products is not None and products < 0:
        raise ValueError("--products must be >= 0")
    if total is None:
        return (DEFAULT_PRODUCTS if products is None else products), MIN_IMAGE, MAX_IMAGE
    if products is None:
        return max(1, round(total / MEAN_IMAGE)), MIN_IMAGE, MAX_IMAGE
    if products == 0:
        raise ValueError("--size needs at least one product")
    mean = total / products
    if not MIN_IMAGE <= mean <= MAX_IMAGE:
        raise ValueError(
            f"--size / --products = {mean / KIB:.1f} KiB per image, outside 5-200 KiB: change either")
    half = min(mean - MIN_IMAGE, MAX_IMAGE - mean)
    return products, round(mean - half), round(mean + half)


def _jfif_header(product_id: int, width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    comment = f"backupctl sample shop product {product_id}".encode("ascii")
    com = b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment
    # baseline SOF0, 3 components: makes `file` report the dimensions
    sof0 = (b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3)
            + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01")
    sos = b"\xff\xda" + struct.pack(">HB", 12, 3) + b"\x01\x00\x02\x11\x03\x11\x00\x3f\x00"
    return b"\xff\xd8" + app0 + com + sof0 + sos


def image_bytes(seed: int, product_id: int, smallest: int, largest: int) -> bytes:
    """The image of one product: a function of (seed, product id, size range) only."""
    rng = random.Random(f"shop-uploads:{seed}:{product_id}")
    size = rng.randint(smallest, largest)
    width, height = rng.choice(((640, 480), (800, 600), (1024, 768), (1200, 1200), (600, 800)))
    head = _jfif_header(product_id, width, height)
    body = bytearray(rng.randbytes(size - len(head) - 2))
    # entropy-coded data never holds a bare 0xFF marker: stuff it like an encoder does (0xFF -> 0xFE
    # keeps the length; real encoders write 0xFF 0x00, which would change it)
    body = body.replace(b"\xff", b"\xfe")
    return head + bytes(body) + b"\xff\xd9"


def text_files() -> dict[str, str]:
    """The non-image files, by path relative to DIR."""
    files = {
        "README.txt": (
            "Uploads of the backupctl sample shop.\n\n"
            "products/       product images, p%06d.jpg by product id\n"
            "invoices/       invoices as plain text, by year and month\n"
            "pages/          static pages\n"
            "cache/          scratch files; backup policies exclude cache/tmp-*.tmp\n"),
        "pages/about us.txt": "About us\n\nA small shop that sells sturdy things and backs them up.\n",
        "pages/größentabelle.txt": "Größentabelle\n\nS  M  L  XL\n36 38 40 42\n",
        EXCLUDED_FILE: "scratch data; excluded from backups by policy\n",
    }
    for month, numbers in (("10", (1, 2)), ("11", (1, 2, 3))):
        for n in numbers:
            amount = 1000 + (int(month) * 7919 + n * 104729) % 90000
            files[f"invoices/2026/{month}/inv-{n:04d}.txt"] = (
                f"INVOICE inv-{n:04d}\nDate: 2026-{month}-{n * 3:02d}\nCustomer: user{n}@shop.example\n"
                f"Total: {amount // 100}.{amount % 100:02d} EUR\nPaid with: sandbox\n")
    return files


def generate(root: Path, products: int, smallest: int, largest: int, seed: int) -> tuple[int, int]:
    """Write the tree; return (files written, bytes written)."""
    count = total = 0
    image_dir = root / "products"
    image_dir.mkdir(parents=True, exist_ok=True)
    for product_id in range(1, products + 1):
        data = image_bytes(seed, product_id, smallest, largest)
        (image_dir / f"p{product_id:06d}.jpg").write_bytes(data)
        count += 1
        total += len(data)
    for rel, text in text_files().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = text.encode("utf-8")
        path.write_bytes(data)
        count += 1
        total += len(data)
    return count, total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="uploads.py", description=__doc__.split("\n\n")[0])
    p.add_argument("dir", type=Path, metavar="DIR", help="uploads root (created if missing)")
    p.add_argument("--products", type=int, default=None,
                   help=f"number of product images, ids 1..N (default {DEFAULT_PRODUCTS}, or from --size)")
    p.add_argument("--size", default=None, help="approximate total size of the images, e.g. 100MiB, 1GiB")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    args = p.parse_args(argv)
    try:
        total_wanted = parse_size(args.size) if args.size is not None else None
        products, smallest, largest = size_range(args.products, total_wanted)
    except ValueError as e:
        p.error(str(e))

    started = time.monotonic()
    try:
        count, written = generate(args.dir, products, smallest, largest, args.seed)
    except OSError as e:
        print(f"uploads: error: {e}", file=sys.stderr)
        return 1
    seconds = time.monotonic() - started
    print(f"uploads: wrote {count} files ({products} product images + {count - products} others), "
          f"{written} bytes ({written / KIB**2:.1f} MiB) under {args.dir} in {seconds:.2f}s")
    print(f"uploads: excluded by policy: {EXCLUDED_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
