"""`serving_default` against bad input, property-style, through the SavedModel in a fresh process.

A few hundred deterministic (seeded) bad images: random bytes of many lengths,
a valid signature followed by random bytes, empty strings, JPEG/PNG/GIF/BMP
files cut at many points, headers that declare huge or extreme sizes. Each one
is sent inside a batch of good images at a varying position, and some batches
hold several. Every such request must fail with `InvalidArgumentError` naming
the first bad image's batch index (the rule in `keras_preact/export/saved_model.py`),
never another exception type, a hang or a giant allocation, and a request of good
images gives exactly the same probabilities after all of them as before.
"""

import io
import json
import pickle
import struct
import subprocess
import sys
import zlib

import numpy as np
from export_helpers import subprocess_env
from PIL import Image

# The serving process: only TensorFlow and NumPy, as a server. Its address space is
# capped, so a runaway allocation fails there (ResourceExhaustedError) instead of
# taking the machine's memory; its peak resident memory is reported.
_SERVE = r"""
import json, pickle, re, resource, sys

saved_model_dir, cases_path, report_path, limit = sys.argv[1:5]
hard = resource.getrlimit(resource.RLIMIT_AS)[1]
soft = int(limit) if hard == resource.RLIM_INFINITY else min(int(limit), hard)
resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

import numpy as np
import tensorflow as tf

with open(cases_path, "rb") as f:
    cases = pickle.load(f)
serve = tf.saved_model.load(saved_model_dir).signatures["serving_default"]
good = tf.constant(cases["good"])
before = serve(image_bytes=good)["probabilities"].numpy()
results = []
for name, batch, first_bad in cases["requests"]:
    print("request:", name, file=sys.stderr, flush=True)  # names the culprit of a crash
    error, message = None, ""
    try:
        serve(image_bytes=tf.constant(batch))
    except Exception as e:  # any type: the test checks it is InvalidArgumentError
        error, message = type(e).__name__, str(getattr(e, "message", e))
    named = sorted({int(i) for i in re.findall(r"image_bytes\[(\d+)\]", message)})
    results.append(
        {"name": name, "expected": first_bad, "error": error, "message": message[:400],
         "named": named, "right_index": named == [first_bad]}
    )
after = serve(image_bytes=good)["probabilities"].numpy()
np.savez(report_path + ".npz", before=before, after=after)
# This process's own peak: on Linux ru_maxrss also counts the parent's RSS at the fork
# (pytest's, gigabytes late in the suite), VmHWM only this program's memory.
try:
    with open("/proc/self/status") as status:
        hwm = [line.split()[1] for line in status if line.startswith("VmHWM:")]
    peak_mib = int(hwm[0]) / 1024
except (OSError, IndexError):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB (bytes on macOS)
    peak_mib = peak / (1 << 20 if sys.platform == "darwin" else 1 << 10)
with open(report_path, "w") as f:
    json.dump({"results": results, "peak_mib": peak_mib}, f)
"""

ADDRESS_SPACE_LIMIT = 12 << 30  # the serving process's virtual memory cap
PEAK_MEMORY_LIMIT_MIB = 3072  # about 1 GiB is TensorFlow, the model and the good images
MAGICS = {"jpeg": b"\xff\xd8\xff", "png": b"\x89PNG\r\n\x1a\n", "gif": b"GIF89a", "bmp": b"BM"}


# ------------------------------------------------------------------- image files and headers


def _encode(image, fmt, **options):
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width, height, idat=None):
    """An RGB PNG with a valid IHDR (correct CRC) for width x height, then `idat` or zero rows."""
    if idat is None:
        compressor = zlib.compressobj(9)
        row = bytes(1 + 3 * width)
        idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        MAGICS["png"]
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _jpeg_with_size(jpeg, width, height):
    """A JPEG whose start-of-frame header declares width x height (its data unchanged)."""
    i = 2
    while jpeg[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + struct.unpack(">H", jpeg[i + 2 : i + 4])[0]
    return jpeg[: i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9 :]


def _gif_first_frame(gif):
    """(offset of the first image descriptor, offset just past that frame's data)."""
    flags = gif[10]
    i = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while gif[i] == 0x21:  # extension blocks: label, then sub-blocks up to a 0 length
        i += 2
        while gif[i]:
            i += gif[i] + 1
        i += 1
    assert gif[i] == 0x2C, "no image descriptor"
    start, flags = i, gif[i + 9]
    i += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1  # + LZW code size
    while gif[i]:
        i += gif[i] + 1
    return start, i + 1


def _gif_with_frame_size(gif, width, height):
    start, _ = _gif_first_frame(gif)
    return gif[: start + 5] + struct.pack("<HH", width, height) + gif[start + 9 :]


def _bmp_with_size(bmp, width, height):
    return bmp[:18] + struct.pack("<ii", width, height) + bmp[26:]


# --------------------------------------------------------------------------- the bad inputs


def random_bytes(rng):
    """Random strings of many lengths: 0-3, around header sizes, up to 5000."""
    lengths = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 16, 24, 25, 26, 32, 33, 54, 55]
    lengths += [100, 255, 256, 1000, 1023, 1024, 2048, 4095, 4096, 5000]
    lengths += sorted(rng.integers(0, 5001, 30).tolist())
    return [(f"random {n} bytes", rng.bytes(n)) for n in lengths]


def signature_then_random(rng):
    """Each format's leading signature followed by 0 to 1000 random bytes."""
    return [
        (f"{fmt} signature + {n} random bytes", magic + rng.bytes(n))
        for fmt, magic in MAGICS.items()
        for n in (0, 1, 2, 5, 10, 20, 40, 100, 1000)
    ]


def truncations(rng, files):
    """Each file cut at fixed header-sized points, 12 random points and just before its end.

    A GIF is cut only inside its first frame: TensorFlow decodes a GIF whose later
    frames or trailer are missing.
    """
    cases = []
    for fmt, data in files.items():
        end = _gif_first_frame(data)[1] if fmt.startswith("gif") else len(data)
        fixed = [1, 2, 3, 4, 6, 8, 10, 13, 16, 20, 24, 26, 30, 33, 54, 100, 1000]
        random = rng.integers(1, end, 12).tolist()
        cuts = sorted({c for c in fixed + random + [end - 1, end - 2, end - 10] if 0 < c < end})
        cases += [(f"{fmt} ({len(data)} bytes) cut at {c}", data[:c]) for c in cuts]
    return cases


def huge_sizes(files):
    """Headers that declare huge or extreme sizes, and small valid files of extreme shapes."""
    jpeg, gif, bmp = files["jpeg"], files["gif"], files["bmp"]
    black = {size: Image.new("RGB", size) for size in ((1, 30000), (30000, 1), (2, 5000))}
    return [
        ("png header 100000x100000", _png(100000, 100000, zlib.compress(bytes(1000)))),
        ("png header 2147483647x1", _png(2**31 - 1, 1, zlib.compress(bytes(1000)))),
        ("png header 0x5", _png(0, 5, zlib.compress(bytes(1000)))),
        ("png 9000x9000 of zeros (a 236 kB bomb)", _png(9000, 9000)),
        ("png 1x30000", _png(1, 30000)),
        ("png 30000x1", _png(30000, 1)),
        ("jpeg header 65535x65535", _jpeg_with_size(jpeg, 65535, 65535)),
        ("jpeg header 65500x65500", _jpeg_with_size(jpeg, 65500, 65500)),
        ("jpeg header 12000x12000", _jpeg_with_size(jpeg, 12000, 12000)),
        ("jpeg header 0x480", _jpeg_with_size(jpeg, 0, 480)),
        ("jpeg 1x30000", _encode(black[1, 30000], "JPEG")),
        ("jpeg 30000x1", _encode(black[30000, 1], "JPEG")),
        ("gif frame header 65535x65535", _gif_with_frame_size(gif, 65535, 65535)),
        ("gif frame header 0x0", _gif_with_frame_size(gif, 0, 0)),
        ("gif 1x30000", _encode(black[1, 30000], "GIF")),
        ("gif 2x5000", _encode(black[2, 5000], "GIF")),
        ("bmp header 100000x100000", _bmp_with_size(bmp, 100000, 100000)),
        ("bmp header 30000x-30000", _bmp_with_size(bmp, 30000, -30000)),
        ("bmp header 40x-2147483648", _bmp_with_size(bmp, 40, -(2**31))),
        ("bmp header 0x0", _bmp_with_size(bmp, 0, 0)),
        ("bmp 1x30000", _encode(black[1, 30000], "BMP")),
    ]


def bad_inputs(rng, files):
    return (
        random_bytes(rng)
        + signature_then_random(rng)
        + [("empty", b"")] * 3
        + truncations(rng, files)
        + huge_sizes(files)
    )


# ------------------------------------------------------------------------------ requests


def requests(rng, bad, fillers, photos):
    """[(name, batch, index of the first bad image)].

    Each bad image at a random position among 0 to 5 small good ones; bad images
    among the real photos; batches with 2 or 3 bad images among good ones.
    """
    out = []

    def batch(name, goods, bads):
        size = len(goods) + len(bads)
        positions = sorted(rng.choice(size, len(bads), replace=False).tolist())
        items, goods, bads = [], list(goods), list(bads)
        for i in range(size):
            items.append(bads.pop(0) if i in positions else goods.pop(0))
        out.append((name, items, positions[0]))

    for name, data in bad:
        goods = [fillers[i] for i in rng.integers(0, len(fillers), rng.integers(0, 6))]
        batch(name, goods, [data])
    for _ in range(20):
        name, data = bad[rng.integers(len(bad))]
        goods = [photos[j] for j in rng.choice(len(photos), 3, replace=False)]
        batch(f"{name}, among photos", goods, [data])
    for _ in range(20):
        chosen = [bad[j] for j in rng.choice(len(bad), rng.integers(2, 4), replace=False)]
        goods = [fillers[j] for j in rng.integers(0, len(fillers), rng.integers(1, 4))]
        names = " + ".join(name for name, _ in chosen)
        batch(f"several bad: {names}", goods, [data for _, data in chosen])
    return out


def _files(photos):
    """Whole JPEG, PNG, BMP files (the photos) and GIFs made from a photo with PIL."""
    by_name = dict(photos)
    photo = Image.open(io.BytesIO(by_name["china.jpg"])).convert("RGB")
    frames = [photo.resize((160, 107)), photo.rotate(180).resize((160, 107))]
    return {
        "jpeg": by_name["china.jpg"],
        "png": by_name["chelsea.png"],
        "bmp": by_name["chelsea.bmp"],
        "gif": _encode(photo.resize((320, 214)), "GIF"),
        "gif animated": _encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
    }


def _fillers(photos):
    """Small good images, one of each format: cheap to serve in every request."""
    photo = Image.open(io.BytesIO(dict(photos)["chelsea.png"])).convert("RGB")
    small = photo.resize((48, 32))
    return [_encode(small, fmt) for fmt in ("JPEG", "PNG", "GIF", "BMP")]


def test_every_bad_image_fails_its_request_naming_its_index(exported, photos, tmp_path):
    """Each request with a bad image fails with InvalidArgumentError naming the first bad
    image's index; the serving process stays small and good images keep their outputs."""
    rng = np.random.default_rng(8)
    bad = bad_inputs(rng, _files(photos))
    good = [data for _, data in photos]
    cases = {"good": good, "requests": requests(rng, bad, _fillers(photos), good)}
    assert len(bad) >= 250 and len(cases["requests"]) >= 290
    with open(tmp_path / "cases.pkl", "wb") as f:
        pickle.dump(cases, f)
    script, report_path = tmp_path / "serve.py", tmp_path / "report.json"
    script.write_text(_SERVE)
    command = [sys.executable, "-I", str(script), exported.saved_model_dir]
    command += [str(tmp_path / "cases.pkl"), str(report_path), str(ADDRESS_SPACE_LIMIT)]
    env = dict(subprocess_env(), CUDA_VISIBLE_DEVICES="")  # CPU: a GPU driver maps gigabytes
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(report_path.read_text())

    results = report["results"]
    assert len(results) == len(cases["requests"])
    wrong = [r for r in results if r["error"] != "InvalidArgumentError" or not r["right_index"]]
    summary = f"{len(wrong)} of {len(results)} requests did not fail with InvalidArgumentError "
    summary += "naming the first bad index:\n"
    assert not wrong, summary + "\n".join(
        f"{r['name']}: {r['error']} naming {r['named']} (expected [{r['expected']}]): "
        f"{r['message'][max(r['message'].find('image_bytes['), 0) :][:150]!r}"
        for r in wrong[:15]
    )
    outputs = np.load(f"{report_path}.npz")
    assert outputs["before"].shape == (len(good), 1000)
    np.testing.assert_array_equal(outputs["after"], outputs["before"])
    assert report["peak_mib"] < PEAK_MEMORY_LIMIT_MIB, f"serving peaked at {report['peak_mib']} MiB"
