"""The `fineshard` load format's logic, without vLLM or torch: which files a rank opens, whether an output
folder was made for the running engine, and reading a rank's tensors from bytes checked against the
manifest's SHA-256.

The output folder is untrusted input (SPEC §7): every file name is a plain name inside the folder, every
number is checked before use, and every byte handed out was hashed first.
"""

import dataclasses
import hashlib
import json
import mmap
import os
import re
import struct

SCHEMA = "fineshard.manifest/1"
MANIFEST = "manifest.json"

# vllm-ascend's `finegrained_tp_config` keys (additional_config) and the manifest's names for them.
FINEGRAINED_KEYS = {
    "embedding_tensor_parallel_size": "embedding",
    "lmhead_tensor_parallel_size": "lm_head",
    "oproj_tensor_parallel_size": "o_proj",
    "mlp_tensor_parallel_size": "mlp",
}

# safetensors dtype -> element size in bytes.
DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
}

# Piece transforms this loader knows (`shard --dtype bf16`); both leave plain BF16 tensors in the rank files,
# so loading needs nothing more, but a manifest naming another kind was made by a fineshard whose output this
# loader cannot vouch for.
KNOWN_TRANSFORMS = ("cast", "fp8_block_dequant")

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class FineshardLoadError(ValueError):
    """The output folder cannot be loaded by this engine; the message says what and why."""


@dataclasses.dataclass(frozen=True)
class EngineParallel:
    """The running engine's parallel configuration, as the loader sees it in one worker."""

    dp: int
    dp_rank: int
    tp: int
    tp_rank: int
    pp: int = 1
    # Fine-grained group sizes by manifest name (embedding, lm_head, o_proj, mlp); 0 = follows TP.
    finegrained: dict = dataclasses.field(default_factory=lambda: {k: 0 for k in FINEGRAINED_KEYS.values()})
    # vLLM's `enable_expert_parallel`; None when unknown (not checked).
    expert_parallel: bool | None = None

    @property
    def global_rank(self) -> int:
        return global_rank(self.dp_rank, self.dp, self.tp_rank, self.tp)


def engine_parallel(dp, dp_rank, tp, tp_rank, pp=1, additional_config=None, dp_index=None,
                    expert_parallel=None) -> EngineParallel:
    """The engine's parallel configuration from vLLM's ParallelConfig fields. `dp_index` is vLLM's
    `data_parallel_index`: `vllm serve --data-parallel-size N` runs the DP ranks of a dense (non-MoE) model
    as independent DP = 1 engines, keeping only the index; such a worker cannot tell its DP size, so it is
    refused rather than guessed."""
    if dp_index is not None and dp_index != dp_rank:
        raise FineshardLoadError(
            f"vLLM runs this worker as an independent DP = 1 engine (data_parallel_index {dp_index}, "
            f"data_parallel_rank {dp_rank}, data_parallel_size {dp}), as it does for dense models under "
            "`vllm serve --data-parallel-size`: fineshard's DP output needs an engine that knows its DP rank "
            "and size (a MoE model, or the external_launcher / torchrun data-parallel mode)")
    engine = EngineParallel(dp=dp, dp_rank=dp_rank, tp=tp, tp_rank=tp_rank, pp=pp,
                            finegrained=finegrained_sizes(additional_config), expert_parallel=expert_parallel)
    global_rank(dp_rank, dp, tp_rank, tp)
    return engine


def global_rank(dp_rank: int, dp: int, tp_rank: int, tp: int) -> int:
    """fineshard's file rank: dp_rank * TP + tp_rank (SPEC §4)."""
    for what, v, n in (("data-parallel", dp_rank, dp), ("tensor-parallel", tp_rank, tp)):
        if not (isinstance(v, int) and isinstance(n, int) and n >= 1 and 0 <= v < n):
            raise FineshardLoadError(f"{what} rank {v!r} is not in 0..<{n!r}")
    return dp_rank * tp + tp_rank


def finegrained_sizes(additional_config) -> dict:
    """The fine-grained sizes of vLLM's `additional_config` (vllm-ascend's `finegrained_tp_config`), by
    manifest name; absent sizes are 0. An unknown key inside `finegrained_tp_config` is an error."""
    sizes = {v: 0 for v in FINEGRAINED_KEYS.values()}
    config = (additional_config or {}).get("finegrained_tp_config") or {}
    if not isinstance(config, dict):
        raise FineshardLoadError(f"additional_config.finegrained_tp_config must be an object, not {config!r}")
    for key, value in config.items():
        if key not in FINEGRAINED_KEYS:
            raise FineshardLoadError(
                f"additional_config.finegrained_tp_config: unknown key '{key}' (known: {', '.join(FINEGRAINED_KEYS)})")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise FineshardLoadError(f"additional_config.finegrained_tp_config.{key} must be an integer >= 0, not {value!r}")
        sizes[FINEGRAINED_KEYS[key]] = value
    return sizes


def read_manifest(folder: str) -> dict:
    """OUT/manifest.json, checked for the fields the loader relies on. A folder with only partial
    manifests (a `--ranks` run) must be combined first."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        partial = [n for n in os.listdir(folder) if n.startswith("manifest.ranks-")] if os.path.isdir(folder) else []
        hint = f" (it holds partial manifests: run `fineshard manifest combine {folder}`)" if partial else ""
        raise FineshardLoadError(f"{path}: no fineshard manifest{hint}; load_format 'fineshard' loads `fineshard shard` output")
    try:
        with open(path, "rb") as f:
            manifest = json.loads(f.read())
    except (OSError, ValueError) as e:
        raise FineshardLoadError(f"{path}: not a readable fineshard manifest: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        got = manifest.get("schema") if isinstance(manifest, dict) else type(manifest).__name__
        raise FineshardLoadError(f"{path}: schema is {got!r}, expected '{SCHEMA}'")
    for key, kind in (("parallel", dict), ("ranks", list)):
        if not isinstance(manifest.get(key), kind):
            raise FineshardLoadError(f"{path}: '{key}' is missing or not a JSON {kind.__name__}")
    return manifest


def source_tied(manifest: dict) -> bool:
    """Whether the source model ties its head to the embedding (the vllm layout then writes the shared
    table once, as `lm_head.weight`)."""
    model = (manifest.get("source") or {}).get("model") or {}
    return model.get("tie_word_embeddings") is True


def check_engine(manifest: dict, engine: EngineParallel) -> None:
    """Refuses (FineshardLoadError listing every difference) a manifest made for another parallel
    configuration than the running engine's: dp, tp, the fine-grained sizes, layout, format; and one
    without a plan fingerprint."""
    p = manifest["parallel"]
    problems = []
    fingerprint = manifest.get("plan_fingerprint")
    if not isinstance(fingerprint, str) or not _HEX64.match(fingerprint):
        problems.append(f"plan_fingerprint is {fingerprint!r}, not a SHA-256: the folder was not written by `fineshard shard`")
    if engine.pp != 1:
        problems.append(f"the engine runs pipeline parallel size {engine.pp}; fineshard output is for PP = 1")
    if p.get("dp") != engine.dp:
        problems.append(f"made for --dp {p.get('dp')}, the engine runs data_parallel_size {engine.dp}")
    if p.get("tp") != engine.tp:
        problems.append(f"made for --tp {p.get('tp')}, the engine runs tensor_parallel_size {engine.tp}")
    made = p.get("finegrained")
    if not isinstance(made, dict):
        problems.append(f"parallel.finegrained is {made!r}, not an object")
        made = {}
    option = {v: k for k, v in FINEGRAINED_KEYS.items()}
    for name in FINEGRAINED_KEYS.values():
        if made.get(name, 0) != engine.finegrained.get(name, 0):
            problems.append(
                f"made with {option[name]} = {made.get(name, 0)}, the engine's additional_config"
                f".finegrained_tp_config gives {engine.finegrained.get(name, 0)}")
    routed = ((manifest.get("source") or {}).get("model") or {}).get("n_routed_experts")
    if routed and engine.expert_parallel is not None and bool(p.get("expert_parallel")) != engine.expert_parallel:
        # A MoE model's routed experts: whole local experts with EP, every expert cut over DP x TP without.
        problems.append(
            f"made {'with' if p.get('expert_parallel') else 'without'} --enable-expert-parallel, the engine runs "
            f"enable_expert_parallel={engine.expert_parallel} ({routed} routed experts)")
    if p.get("layout") != "vllm":
        problems.append(f"made with --layout {p.get('layout')}; vLLM loads --layout vllm (its parameter names)")
    if p.get("format") != "safetensors":
        problems.append(f"made with --format {p.get('format')}; the loader reads safetensors")
    if problems:
        raise FineshardLoadError(
            f"the fineshard output was not made for this engine (global rank {engine.global_rank} of "
            f"DP {engine.dp} x TP {engine.tp}): " + "; ".join(problems))


def rank_entry(manifest: dict, rank: int) -> dict:
    """The manifest's entry of global rank `rank`, checked against its dp/tp ranks."""
    found = [r for r in manifest["ranks"] if isinstance(r, dict) and r.get("rank") == rank]
    if len(found) != 1:
        raise FineshardLoadError(f"manifest.json lists global rank {rank} {len(found)} times (expected once)")
    entry = found[0]
    tp = manifest["parallel"]["tp"]
    if entry.get("dp_rank") != rank // tp or entry.get("tp_rank") != rank % tp:
        raise FineshardLoadError(
            f"manifest.json: rank {rank} says dp_rank {entry.get('dp_rank')}, tp_rank {entry.get('tp_rank')}; "
            f"with TP {tp} it is dp_rank {rank // tp}, tp_rank {rank % tp}")
    if not isinstance(entry.get("files"), list) or not isinstance(entry.get("tensors"), list):
        raise FineshardLoadError(f"manifest.json: rank {rank} has no 'files' / 'tensors' lists")
    return entry


def plain_name(folder: str, name) -> str:
    """`folder/name` for a plain file name; anything else (a path, '..', NUL) is refused."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise FineshardLoadError(f"manifest.json names the file {name!r}, which is not a plain file name inside {folder}")
    return os.path.join(folder, name)


def rank_files(folder: str, manifest: dict, rank: int) -> list:
    """[(path, file record, [tensor records])] of global rank `rank`, in part order."""
    entry = rank_entry(manifest, rank)
    by_file = {}
    for t in entry["tensors"]:
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise FineshardLoadError(f"manifest.json: rank {rank} has a malformed tensor entry {t!r}")
        for piece in t.get("pieces") or []:
            transform = piece.get("transform") if isinstance(piece, dict) else None
            kind = transform.get("kind") if isinstance(transform, dict) else transform
            if transform is not None and kind not in KNOWN_TRANSFORMS:
                raise FineshardLoadError(
                    f"manifest.json: rank {rank} tensor '{t['name']}' has a piece with transform {kind!r}, which this "
                    f"loader does not know (known: {', '.join(KNOWN_TRANSFORMS)}); upgrade fineshard_vllm")
        by_file.setdefault(t.get("file"), []).append(t)
    out = []
    names = set()
    for f in entry["files"]:
        if not isinstance(f, dict):
            raise FineshardLoadError(f"manifest.json: rank {rank} has a malformed file entry {f!r}")
        path = plain_name(folder, f.get("name"))
        if f["name"] in names:
            raise FineshardLoadError(f"manifest.json: rank {rank} lists {f['name']} twice")
        names.add(f["name"])
        out.append((path, f, by_file.pop(f["name"], [])))
    if by_file:
        raise FineshardLoadError(f"manifest.json: rank {rank} has tensors in files it does not list: {sorted(map(str, by_file))}")
    return out


def _sha256_ok(expected, data, what: str) -> None:
    if not isinstance(expected, str) or not _HEX64.match(expected):
        raise FineshardLoadError(f"{what}: manifest.json has no SHA-256 for it ({expected!r})")
    got = hashlib.sha256(data).hexdigest()
    if got != expected:
        raise FineshardLoadError(f"{what}: SHA-256 {got} differs from manifest.json's {expected}: the file was changed or damaged")


def read_rank_file(path: str, record: dict, tensors: list):
    """Yields (name, dtype, shape, memoryview of the bytes) for every tensor of one output file, after
    checking them against the manifest: the whole file's SHA-256 (or each tensor's, when the file record's
    `tensor_sha256` has one for every tensor), its size, and the header's names, dtypes and shapes. The views point into
    a read-only mapping that lives as long as they do."""
    size = os.path.getsize(path)
    if size != record.get("bytes"):
        raise FineshardLoadError(f"{path}: {size} bytes, manifest.json says {record.get('bytes')}")
    with open(path, "rb") as f:
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    view = memoryview(data)
    tensor_sha256 = record.get("tensor_sha256")
    per_tensor = bool(tensors) and isinstance(tensor_sha256, dict) and all(t["name"] in tensor_sha256 for t in tensors)
    if not per_tensor:
        _sha256_ok(record.get("sha256"), view, path)
    if size < 8:
        raise FineshardLoadError(f"{path}: {size} bytes is too short for a safetensors file")
    (header_len,) = struct.unpack("<Q", view[:8])
    if header_len > min(size - 8, 100_000_000):
        raise FineshardLoadError(f"{path}: header length {header_len} does not fit the file")
    try:
        header = json.loads(bytes(view[8:8 + header_len]))
    except ValueError as e:
        raise FineshardLoadError(f"{path}: malformed safetensors header: {e}") from None
    header.pop("__metadata__", None)
    planned = {t["name"]: t for t in tensors}
    if set(header) != set(planned):
        missing, extra = sorted(set(planned) - set(header)), sorted(set(header) - set(planned))
        raise FineshardLoadError(f"{path}: tensors differ from manifest.json (missing {missing[:5]}, extra {extra[:5]})")
    base = 8 + header_len
    for name in sorted(header, key=lambda n: header[n].get("data_offsets", [0])[0] if isinstance(header[n], dict) else 0):
        h, t = header[name], planned[name]
        if not isinstance(h, dict) or h.get("dtype") != t.get("dtype") or h.get("shape") != t.get("shape"):
            raise FineshardLoadError(f"{path}: '{name}' is {h!r} in the file, manifest.json says dtype {t.get('dtype')} shape {t.get('shape')}")
        if t["dtype"] not in DTYPE_SIZES or not all(isinstance(d, int) and d >= 0 for d in t["shape"]):
            raise FineshardLoadError(f"{path}: '{name}' has an unknown dtype or a bad shape")
        count = 1
        for d in t["shape"]:
            count *= d
        begin, end = h.get("data_offsets", [None, None])
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end and base + end <= size
                and end - begin == count * DTYPE_SIZES[t["dtype"]]):
            raise FineshardLoadError(f"{path}: '{name}' has data offsets {h.get('data_offsets')} that do not match its shape or the file")
        chunk = view[base + begin:base + end]
        if per_tensor:
            _sha256_ok(tensor_sha256[name], chunk, f"{path}: tensor '{name}'")
        yield name, t["dtype"], tuple(t["shape"]), chunk


def plan_load(folder: str, engine: EngineParallel):
    """Everything the loader decides before touching a parameter: the manifest (checked against the
    engine) and the files of the engine's global rank."""
    manifest = read_manifest(folder)
    check_engine(manifest, engine)
    rank = engine.global_rank
    return manifest, rank_files(folder, manifest, rank)
