#!/usr/bin/env python3
"""Generate the corpus of broken checkpoints fineshard must refuse (issue 7, part 1 and 2).

Usage: python scripts/make_bad_fixtures.py OUT_DIR        (e.g. fixtures/bad)

Writes into OUT_DIR (emptied first):
  <defect>.safetensors   one broken safetensors file per header rule (SPEC §3)
  index_<defect>/        a folder with a broken model.safetensors.index.json or shard set
  folder_<defect>/       a folder of plain .safetensors files that conflict
  h5_<defect>.h5         broken HDF5 input (h5_zstd_*: a first chunk that must fail to read) (needs h5py + hdf5plugin; skipped with a warning
                         when they are missing, e.g. outside ~/.cache/fineshard/venv)
  EXPECTED.json          {case name: a substring fineshard's error message must contain}

`fineshard inspect OUT_DIR/<case>` must exit 2 for every case in EXPECTED.json. The
h5_zstd_*.h5 cases are not in EXPECTED.json: its header is valid (inspect reads headers
only), and the defect shows only when the chunk is read; BadInputTests reads it through the library.

The million-entry header is not here (it is generated at test time). Deterministic: running twice
gives byte-identical files (random bytes come from random.Random(SEED); HDF5 files are written
with track_times=False and a fixed libver).
"""
import json
import os
import random
import shutil
import struct
import sys

SEED = 20260707
RNG = random.Random(SEED)

# case name -> expected substring of the error message
EXPECTED = {}


def header_bytes(header):
    """`header` is a dict (serialized compactly) or a str/bytes of raw header text."""
    if isinstance(header, dict):
        return json.dumps(header, separators=(",", ":")).encode()
    if isinstance(header, str):
        return header.encode()
    return header


def st(out, name, header, data=b"", declared=None, expect=None):
    """Writes OUT/NAME.safetensors: the 8-byte length, the header, then `data` (bytes or a size)."""
    h = header_bytes(header)
    if isinstance(data, int):
        data = bytes((i * 7 + 3) & 0xFF for i in range(data))
    length = len(h) if declared is None else declared
    path = os.path.join(out, name + ".safetensors")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", length) + h + data)
    EXPECTED[name + ".safetensors"] = expect
    return path


def raw(out, name, content, expect):
    path = os.path.join(out, name)
    with open(path, "wb") as f:
        f.write(content)
    EXPECTED[name] = expect


def tensor(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def good_st_bytes(tensors):
    """A valid safetensors file for [(name, dtype, shape, size)] laid out in order."""
    header = {}
    off = 0
    for name, dtype, shape, size in tensors:
        header[name] = tensor(dtype, shape, (off, off + size))
        off += size
    h = header_bytes(header)
    return struct.pack("<Q", len(h)) + h + bytes((i * 5 + 1) & 0xFF for i in range(off))


def safetensors_cases(out):
    one = {"w": tensor()}
    # Length prefix
    raw(out, "empty.safetensors", b"", "fewer than the 8")
    raw(out, "tiny_5_bytes.safetensors", b"\x02\x00\x00\x00\x00", "fewer than the 8")
    st(out, "header_length_past_end", one, 8, declared=1000, expect="runs past the end of the file")
    st(out, "header_length_over_100mb", b"", declared=100_000_001, expect="exceeds the limit")
    st(out, "header_length_u64_max", b"", declared=2**64 - 1, expect="exceeds the limit")
    st(out, "header_length_zero", b"", declared=0, expect="must be a JSON object")
    # Encoding and syntax
    st(out, "header_not_utf8", b'{"w\xff\xfe":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', 8,
       expect="not valid UTF-8")
    st(out, "header_not_json", '{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]', 8,
       expect="found the end of the header")
    st(out, "header_garbage_json", '{"w": oops}', 0, expect="tensor 'w' must be an object")
    st(out, "header_not_object", "[1, 2, 3]", 0, expect="must be a JSON object")
    st(out, "header_only_whitespace", " " * 16, 0, expect="must be a JSON object")
    st(out, "header_leading_whitespace", ' {"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', 8,
       expect="must be a JSON object")
    st(out, "header_trailing_garbage", '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} x', 8,
       expect="unexpected bytes after the header object")
    st(out, "header_unterminated_string", '{"w', 0, expect="the end of a string")
    st(out, "header_control_character", '{"w\x01":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', 8,
       expect="control character")
    st(out, "header_unpaired_surrogate", '{"w\\ud800":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', 8,
       expect="unpaired surrogate")
    st(out, "header_bad_escape", '{"w\\q":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', 8,
       expect="a valid escape")
    depth = 1_000
    st(out, "deeply_nested_objects", '{"w":' * depth + "1" + "}" * depth, 0, expect="unknown field 'w'")
    st(out, "deeply_nested_arrays", "[" * depth + "]" * depth, 0, expect="must be a JSON object")
    st(out, "deeply_nested_shape", '{"w":{"dtype":"F32","shape":' + "[" * depth + "]" * depth
       + ',"data_offsets":[0,0]}}', 0, expect="shape entry")
    # Tensor entries
    st(out, "tensor_not_object", '{"w": 5}', 0, expect="tensor 'w' must be an object")
    st(out, "missing_dtype", {"w": {"shape": [2], "data_offsets": [0, 8]}}, 8, expect="has no dtype")
    st(out, "missing_shape", {"w": {"dtype": "F32", "data_offsets": [0, 8]}}, 8, expect="has no shape")
    st(out, "missing_data_offsets", {"w": {"dtype": "F32", "shape": [2]}}, 8, expect="has no data_offsets")
    st(out, "unknown_field", {"w": dict(tensor(), extra=1)}, 8, expect="unknown field 'extra'")
    st(out, "duplicate_field", '{"w":{"dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,8]}}', 8,
       expect="field 'dtype' twice")
    st(out, "duplicate_tensor_name",
       '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}',
       16, expect="'w' appears twice")
    st(out, "unknown_dtype", {"w": tensor("F128")}, 8, expect="unknown dtype 'F128'")
    st(out, "dtype_lowercase", {"w": tensor("f32")}, 8, expect="unknown dtype 'f32'")
    st(out, "dtype_not_string", '{"w":{"dtype":4,"shape":[2],"data_offsets":[0,8]}}', 8,
       expect="dtype that is not a string")
    # Shapes
    st(out, "negative_shape", {"w": tensor(shape=(-2,))}, 8, expect="shape entry '-2'")
    st(out, "non_integer_shape", '{"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,10]}}', 10,
       expect="shape entry '2.5'")
    st(out, "exponent_shape", '{"w":{"dtype":"F32","shape":[2e0],"data_offsets":[0,8]}}', 8,
       expect="shape entry '2e0'")
    st(out, "string_shape", '{"w":{"dtype":"F32","shape":"2","data_offsets":[0,8]}}', 8,
       expect="shape that is not an array")
    st(out, "leading_zero_shape", '{"w":{"dtype":"F32","shape":[02],"data_offsets":[0,8]}}', 8,
       expect="leading zero")
    st(out, "nan_shape", '{"w":{"dtype":"F32","shape":[NaN],"data_offsets":[0,8]}}', 8,
       expect="shape entry 'NaN'")
    st(out, "shape_value_over_64_bits", '{"w":{"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,8]}}', 8,
       expect="overflows 64 bits")
    st(out, "overflowing_shape", {"w": tensor(shape=(2**32, 2**32, 4), offsets=(0, 8))}, 8,
       expect="element count overflows")
    st(out, "overflowing_byte_count", {"w": tensor(shape=(2**62,), offsets=(0, 8))}, 8, expect="which overflows")
    st(out, "shape_too_many_dims", {"w": tensor(shape=(1,) * 65, offsets=(0, 4))}, 4, expect="more than 64 entries")
    # Offsets
    st(out, "data_offsets_three_entries", {"w": tensor(offsets=(0, 8, 16))}, 8, expect="3 data_offsets")
    st(out, "data_offsets_one_entry", {"w": tensor(offsets=(8,))}, 8, expect="1 data_offsets")
    st(out, "infinity_offsets", '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,Infinity]}}', 8,
       expect="data_offsets entry 'Infinity'")
    st(out, "negative_offsets", {"w": tensor(offsets=(-8, 0))}, 8, expect="data_offsets entry '-8'")
    st(out, "offsets_over_64_bits", '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,99999999999999999999]}}', 8,
       expect="overflows 64 bits")
    st(out, "offsets_reversed", {"w": tensor(offsets=(8, 0))}, 8, expect="the end is before the start")
    st(out, "size_mismatch", {"w": tensor(shape=(2, 2), offsets=(0, 12))}, 12, expect="span 12")
    st(out, "offsets_outside_data_area", {"a": tensor(offsets=(0, 8)), "b": tensor(offsets=(100, 108))}, 16,
       expect="past the end of the 16-byte data area")
    st(out, "huge_tensor_small_file", {"w": tensor("U8", (2**62,), (0, 2**62))}, 8,
       expect="past the end of the 8-byte data area")
    st(out, "truncated_data", {"w": tensor(shape=(16,), offsets=(0, 64))}, 40,
       expect="past the end of the 40-byte data area")
    st(out, "overlapping", {"a": tensor(shape=(4,), offsets=(0, 16)), "b": tensor(shape=(4,), offsets=(8, 24))}, 24,
       expect="overlaps tensor 'a'")
    st(out, "hole", {"a": tensor(offsets=(0, 8)), "b": tensor(offsets=(16, 24))}, 24, expect="belong to no tensor")
    st(out, "hole_at_start", {"a": tensor(offsets=(8, 16))}, 16, expect="belong to no tensor")
    st(out, "trailing_bytes", {"w": tensor()}, 12, expect="4 trailing bytes")
    # __metadata__
    st(out, "metadata_not_object", {"__metadata__": "pt", "w": tensor()}, 8,
       expect="__metadata__ must be an object")
    st(out, "metadata_value_not_string", {"__metadata__": {"format": 1}, "w": tensor()}, 8,
       expect="__metadata__ value of 'format' is not a string")
    st(out, "metadata_value_nan", '{"__metadata__":{"format":NaN},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', 8,
       expect="__metadata__ value of 'format' is not a string")
    st(out, "metadata_nested_object", {"__metadata__": {"a": {"b": "c"}}, "w": tensor()}, 8,
       expect="__metadata__ value of 'a' is not a string")
    st(out, "metadata_twice",
       '{"__metadata__":{},"__metadata__":{},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', 8,
       expect="'__metadata__' appears twice")
    st(out, "metadata_key_twice",
       '{"__metadata__":{"k":"a","k":"b"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', 8,
       expect="key 'k' appears twice")


def write_index(folder, weight_map=None, raw_index=None):
    path = os.path.join(folder, "model.safetensors.index.json")
    with open(path, "wb") as f:
        if raw_index is not None:
            f.write(raw_index.encode() if isinstance(raw_index, str) else raw_index)
        else:
            f.write(json.dumps({"metadata": {"total_size": 16}, "weight_map": weight_map}, indent=2).encode())


def shard(folder, name, tensors):
    path = os.path.join(folder, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(good_st_bytes(tensors))


def index_case(out, defect, expect, weight_map=None, raw_index=None, shards=()):
    name = "index_" + defect
    folder = os.path.join(out, name)
    os.makedirs(folder)
    for file, tensors in shards:
        shard(folder, file, tensors)
    write_index(folder, weight_map, raw_index)
    EXPECTED[name] = expect


def index_cases(out):
    a = ("a", "F32", [2], 8)
    b = ("b", "F32", [2], 8)
    two = [("model-00001-of-00002.safetensors", [a]), ("model-00002-of-00002.safetensors", [b])]
    m1, m2 = two[0][0], two[1][0]
    index_case(out, "missing_shard_file", "shard file 'model-00002-of-00002.safetensors' (of tensor 'b') does not exist",
               {"a": m1, "b": m2}, shards=two[:1])
    index_case(out, "tensor_mapped_twice", "tensor 'a' is mapped twice",
               raw_index='{"weight_map": {"a": "%s", "b": "%s", "a": "%s"}}' % (m1, m2, m2), shards=two)
    index_case(out, "tensor_missing_from_its_file", "tensor 'b' is mapped to '%s', which does not contain it" % m1,
               {"a": m1, "b": m1}, shards=two)
    index_case(out, "tensor_not_in_index", "tensor 'b' is in '%s' but the index does not list it" % m1,
               {"a": m1}, shards=[(m1, [a, b])])
    index_case(out, "tensor_in_two_shards", "'a'",
               {"a": m1, "b": m2}, shards=[(m1, [a]), (m2, [a, b])])
    index_case(out, "shard_path_absolute", "absolute paths and '..' are refused",
               {"a": "/tmp/fineshard-bad-fixture-absent.safetensors"}, shards=two[:1])
    index_case(out, "shard_path_dotdot", "absolute paths and '..' are refused",
               {"a": "../" + m1}, shards=two[:1])
    index_case(out, "shard_path_inner_dotdot", "absolute paths and '..' are refused",
               {"a": "sub/../../" + m1}, shards=two[:1])
    index_case(out, "shard_path_empty", "absolute paths and '..' are refused",
               {"a": ""}, shards=two[:1])
    index_case(out, "shard_path_is_folder", "is a folder, not a file",
               {"a": "sub"}, shards=[("sub/" + m1, [a])])
    index_case(out, "shard_path_dot", "the folder itself", {"a": "."}, shards=two[:1])
    index_case(out, "not_json", "the index is not a JSON object", raw_index="weight_map = a", shards=two[:1])
    index_case(out, "truncated", "weight_map", raw_index='{"weight_map": {"a": ', shards=two[:1])
    index_case(out, "not_object", "the index is not a JSON object", raw_index="[]", shards=two[:1])
    index_case(out, "empty_file", "the index is not a JSON object", raw_index="", shards=two[:1])
    index_case(out, "weight_map_missing", "the index has no weight_map",
               raw_index='{"metadata": {"total_size": 8}}', shards=two[:1])
    index_case(out, "weight_map_not_object", "weight_map is not an object",
               raw_index='{"weight_map": ["a"]}', shards=two[:1])
    index_case(out, "weight_map_empty", "the weight_map names no tensors",
               raw_index='{"weight_map": {}}', shards=two[:1])
    index_case(out, "weight_map_value_not_string", "weight_map value of 'a' is not a string",
               raw_index='{"weight_map": {"a": 1}}', shards=two[:1])
    index_case(out, "metadata_deeply_nested", "nested deeper than 64 levels",
               raw_index='{"metadata": ' + "[" * 1_000 + "]" * 1_000 + ', "weight_map": {"a": "%s"}}' % m1,
               shards=two[:1])
    index_case(out, "metadata_nan", "a JSON value",
               raw_index='{"metadata": {"total_size": NaN}, "weight_map": {"a": "%s"}}' % m1, shards=two[:1])
    # A shard whose own header is broken: the error names the shard.
    name = "index_shard_header_broken"
    folder = os.path.join(out, name)
    os.makedirs(folder)
    with open(os.path.join(folder, m1), "wb") as f:
        f.write(struct.pack("<Q", 4) + b"[1]]")
    write_index(folder, {"a": m1})
    EXPECTED[name] = "must be a JSON object"


def folder_cases(out):
    name = "folder_tensor_in_two_files"
    folder = os.path.join(out, name)
    os.makedirs(folder)
    shard(folder, "x.safetensors", [("a", "F32", [2], 8)])
    shard(folder, "y.safetensors", [("a", "F32", [2], 8)])
    EXPECTED[name] = "'a'"
    name = "folder_subfolder_named_safetensors"
    folder = os.path.join(out, name)
    shard(folder, "x.safetensors/inner.safetensors", [("a", "F32", [2], 8)])
    EXPECTED[name] = "is a folder, not a file"
    name = "folder_no_checkpoint"
    folder = os.path.join(out, name)
    os.makedirs(folder)
    with open(os.path.join(folder, "README.md"), "w") as f:
        f.write("not a checkpoint\n")
    EXPECTED[name] = "not a checkpoint"


def hdf5_cases(out):
    try:
        import h5py
        import hdf5plugin
        import numpy as np
    except ImportError as e:
        print(f"warning: {e}; HDF5 cases skipped (use ~/.cache/fineshard/venv/bin/python)", file=sys.stderr)
        return
    kw = dict(track_times=False)

    def new(path):
        return h5py.File(path, "w", libver=("earliest", "v110"))

    data = np.arange(32 * 32, dtype=np.float32).reshape(32, 32)
    # Truncated: a valid contiguous file, cut inside the data.
    path = os.path.join(out, "h5_truncated.h5")
    with new(path) as f:
        f.create_dataset("w", data=data, **kw)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    EXPECTED["h5_truncated.h5"] = "truncated file"

    # Random bytes after the 8-byte signature.
    raw(out, "h5_garbage_after_signature.h5",
        b"\x89HDF\r\n\x1a\n" + bytes(RNG.getrandbits(8) for _ in range(2048)), "HDF5")
    raw(out, "h5_signature_only.h5", b"\x89HDF\r\n\x1a\n", "HDF5")
    raw(out, "h5_empty.h5", b"", "HDF5")
    # A valid superblock whose object header (the root group) is garbled.
    path = os.path.join(out, "h5_root_group_garbled.h5")
    with new(path) as f:
        f.create_dataset("w", data=data[:2], **kw)
    with open(path, "r+b") as f:
        f.seek(96)
        f.write(bytes(RNG.getrandbits(8) for _ in range(200)))
    EXPECTED["h5_root_group_garbled.h5"] = "HDF5"

    # Semantic errors fineshard itself detects.
    path = os.path.join(out, "h5_two_datasets_one_name.h5")
    with new(path) as f:
        f.create_dataset("a/b", data=data[:1], **kw)
        f.create_dataset("a.b", data=data[:1], **kw)
    EXPECTED["h5_two_datasets_one_name.h5"] = "both map to the tensor name 'a.b'"
    path = os.path.join(out, "h5_unknown_dtype_attribute.h5")
    with new(path) as f:
        d = f.create_dataset("w", data=np.zeros(4, np.uint16), **kw)
        d.attrs["dtype"] = np.bytes_("float128")
    EXPECTED["h5_unknown_dtype_attribute.h5"] = "unknown dtype attribute 'float128'"
    path = os.path.join(out, "h5_dtype_attribute_size_mismatch.h5")
    with new(path) as f:
        d = f.create_dataset("w", data=np.zeros(4, np.uint32), **kw)
        d.attrs["dtype"] = np.bytes_("bfloat16")
    EXPECTED["h5_dtype_attribute_size_mismatch.h5"] = "2-byte elements but the stored type has 4-byte elements"

    # A zstd chunk of garbage: valid metadata, so not in EXPECTED (inspect reads headers only).
    path = os.path.join(out, "h5_zstd_garbage_chunk.h5")
    with new(path) as f:
        f.create_dataset("w", data=data, chunks=(8, 32), **hdf5plugin.Zstd(clevel=3), **kw)
    with h5py.File(path, "r") as f:
        info = f["w"].id.get_chunk_info(0)
        offset, size = info.byte_offset, info.size
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(bytes((0xA5 ^ i) & 0xFF for i in range(size)))

    # Well-formed zstd frames of the wrong size in place of the first chunk (1024 bytes): fewer
    # bytes than the chunk, more, or a content size of 1 TiB. A skippable frame pads each to the
    # stored chunk size. Like the garbage chunk, these show only on read (not in EXPECTED).
    def rle_block(n, byte):
        return struct.pack("<I", (n << 3) | (1 << 1) | 1)[:3] + bytes([byte])

    magic = b"\x28\xb5\x2f\xfd"
    frames = {
        "h5_zstd_chunk_too_small.h5": magic + b"\x20\x04" + rle_block(4, 0x41),
        "h5_zstd_chunk_too_large.h5": magic + b"\xa0" + struct.pack("<I", 65536) + rle_block(65536, 0x41),
        "h5_zstd_chunk_declares_1tib.h5": magic + b"\xe0" + struct.pack("<Q", 1 << 40) + rle_block(4, 0x41),
    }
    for name, frame in frames.items():
        path = os.path.join(out, name)
        with new(path) as f:
            f.create_dataset("w", data=data, chunks=(8, 32), **hdf5plugin.Zstd(clevel=3), **kw)
        with h5py.File(path, "r") as f:
            info = f["w"].id.get_chunk_info(0)
            offset, size = info.byte_offset, info.size
        pad = size - len(frame) - 8
        assert pad >= 0, (name, size)
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(frame + b"\x50\x2a\x4d\x18" + struct.pack("<I", pad) + bytes(pad))


def main(out):
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    safetensors_cases(out)
    index_cases(out)
    folder_cases(out)
    hdf5_cases(out)
    with open(os.path.join(out, "EXPECTED.json"), "w") as f:
        json.dump(EXPECTED, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"{len(EXPECTED)} cases in {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
