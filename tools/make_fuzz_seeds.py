#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets that are not copied from other fixtures.

    python3 tools/make_fuzz_seeds.py        # needs Pillow for the image seeds

fuzz/corpus/weights/ holds copies of tests/fixtures/weights/ and fuzz/corpus/config/ the
example configs; this script writes idx/, cifar/, text_table/, tokenizer/ and image/.
Deterministic.
"""

import gzip
import io
import struct
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "fuzz" / "corpus"


def idx(magic, dims, data):
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + bytes(data)


def write(target, name, data):
    (OUT / target).mkdir(parents=True, exist_ok=True)
    (OUT / target / name).write_bytes(data)


def main():
    # The idx target splits its input at byte 0's share of the rest: images, then labels.
    images = idx(0x803, [3, 2, 4], range(24))
    labels = idx(0x801, [3], [0, 1, 9])
    rest = images + labels
    split = round(len(images) * 255 / len(rest))
    write("idx", "raw", bytes([split]) + rest)
    gz_images, gz_labels = gzip.compress(images, mtime=0), gzip.compress(labels, mtime=0)
    rest = gz_images + gz_labels
    split = round(len(gz_images) * 255 / len(rest))
    write("idx", "gzip", bytes([split]) + rest)

    # CIFAR-10 records: label byte + 3072 pixels; CIFAR-100: coarse + fine labels + pixels.
    rec10 = b"".join(bytes([i % 10]) + bytes((i * 7 + j) % 256 for j in range(3072)) for i in range(2))
    write("cifar", "cifar10-2-records", rec10)
    rec100 = b"".join(bytes([i, 50 + i]) + bytes((i * 3 + j) % 256 for j in range(3072)) for i in range(2))
    write("cifar", "cifar100-2-records", rec100)

    # Text tables: the first byte picks the format (0 csv, 1 tsv, 2 jsonl).
    write("text_table", "csv", b"\x00text,label\nhello world,a\n\"quoted, with comma\",b\n")
    write("text_table", "tsv", b"\x01text\tlabel\ncaf\xc3\xa9\tx\nsecond row\ty\n")
    write("text_table", "jsonl", b'\x02{"text": "one", "label": "a"}\n{"text": "two", "label": 3}\n')
    write("text_table", "csv-missing-column", b"\x00text,other\nhello,a\n")
    # The tokenizer: the tests' small WordPiece tokenizer.json.
    tok = (OUT.parent.parent / "tests" / "fixtures" / "text" / "tokenizer.json").read_bytes()
    write("tokenizer", "wordpiece.json", tok)
    write("tokenizer", "truncated.json", tok[: len(tok) // 2])

    try:
        from PIL import Image
    except ImportError:
        print("Pillow not installed: image seeds not written")
        return
    for mode, fmt, size in [("RGB", "PNG", (5, 3)), ("L", "PNG", (4, 4)), ("RGB", "JPEG", (8, 6)), ("RGBA", "PNG", (3, 3))]:
        img = Image.new(mode, size)
        img.putdata([tuple((x * 40 + c * 30) % 256 for c in range(len(mode))) if len(mode) > 1 else (x * 40) % 256 for x in range(size[0] * size[1])])
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        write("image", f"{mode.lower()}-{size[0]}x{size[1]}.{fmt.lower()}", buf.getvalue())


if __name__ == "__main__":
    main()
