"""The `fineshard` load format's logic without an engine: global rank, the manifest against the engine's
DP / TP / fine-grained sizes, refusals, and reading a rank's bytes checked against the manifest.

Run: python3 -m unittest discover -s python/fineshard_vllm/tests (plain Python, no vLLM, torch or numpy).
"""
import hashlib
import json
import os
import struct
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fineshard_vllm.manifest import (  # noqa: E402
    EngineParallel, FineshardLoadError, engine_parallel, finegrained_sizes, global_rank, plan_load, read_rank_file,
    source_tied)

FG = {"embedding": 4, "lm_head": 2, "o_proj": 0, "mlp": 2}
ADDITIONAL = {"finegrained_tp_config": {"embedding_tensor_parallel_size": 4, "lmhead_tensor_parallel_size": 2,
                                        "mlp_tensor_parallel_size": 2}}


def safetensors_bytes(tensors):
    """A safetensors file of F32 tensors {name: (shape, [values])}, written by hand."""
    header, data = {}, b""
    for name in sorted(tensors):
        shape, values = tensors[name]
        blob = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def make_folder(folder, dp=4, tp=2, finegrained=FG, per_tensor=False, **parallel):
    """A DP x TP output folder whose rank r holds `w` = [r, r + 0.5] and `b` = [r]."""
    ranks = []
    for r in range(dp * tp):
        tensors = {"w": ([2], [float(r), r + 0.5]), "b": ([1], [float(r)])}
        blob = safetensors_bytes(tensors)
        name = f"model-rank-{r}-part-0.safetensors"
        with open(os.path.join(folder, name), "wb") as f:
            f.write(blob)
        records = [{"name": t, "file": name, "dtype": "F32", "shape": tensors[t][0], "pieces": []} for t in sorted(tensors)]
        file = {"name": name, "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
        if per_tensor:
            file["tensor_sha256"] = {t: hashlib.sha256(struct.pack(f"<{len(v[1])}f", *v[1])).hexdigest() for t, v in tensors.items()}
        ranks.append({"rank": r, "dp_rank": r // tp, "tp_rank": r % tp, "files": [file], "tensors": records})
    p = {"dp": dp, "tp": tp, "finegrained": dict(finegrained), "layout": "vllm", "format": "safetensors",
         "expert_parallel": False, "vocab_padding": 64, "file_pattern": "model-rank-{rank}-part-{part}"}
    p.update(parallel)
    manifest = {"schema": "fineshard.manifest/1", "plan_fingerprint": "ab" * 32, "parallel": p, "ranks": ranks,
                "source": {}, "copied": [], "tool": {"name": "fineshard", "version": "0"}}
    write_manifest_json(folder, manifest)
    return manifest


def read_manifest_json(folder):
    with open(os.path.join(folder, "manifest.json")) as f:
        return json.load(f)


def write_manifest_json(folder, manifest):
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(manifest, f)


def engine(dp_rank, tp_rank, dp=4, tp=2, additional=ADDITIONAL, pp=1):
    return EngineParallel(dp=dp, dp_rank=dp_rank, tp=tp, tp_rank=tp_rank, pp=pp, finegrained=finegrained_sizes(additional))


def load(folder, e):
    _, files = plan_load(folder, e)
    out = {}
    for path, record, tensors in files:
        for name, dtype, shape, data in read_rank_file(path, record, tensors):
            out[name] = (os.path.basename(path), dtype, shape, list(struct.unpack(f"<{len(data) // 4}f", data)))
    return out


class GlobalRank(unittest.TestCase):
    def test_global_rank_is_dp_rank_times_tp_plus_tp_rank(self):
        self.assertEqual([global_rank(d, 4, t, 2) for d in range(4) for t in range(2)], list(range(8)))
        self.assertEqual(global_rank(3, 8, 0, 1), 3)

    def test_a_rank_outside_its_group_is_refused(self):
        for args in ((4, 4, 0, 2), (0, 4, 2, 2), (-1, 4, 0, 2), (0, 0, 0, 2)):
            with self.assertRaises(FineshardLoadError):
                global_rank(*args)


class EngineFromVllmConfig(unittest.TestCase):
    def test_a_dp_rank_of_a_dp4_tp2_engine_with_finegrained_sizes(self):
        e = engine_parallel(dp=4, dp_rank=3, tp=2, tp_rank=1, additional_config=ADDITIONAL, dp_index=3)
        self.assertEqual((e.global_rank, e.finegrained), (7, FG))

    def test_an_independent_dense_dp_rank_is_refused_because_it_cannot_tell_its_dp_size(self):
        # vllm serve --data-parallel-size 2 on a dense model: DP size 1, rank 0, index 1.
        with self.assertRaisesRegex(FineshardLoadError, "independent DP = 1 engine .*data_parallel_index 1"):
            engine_parallel(dp=1, dp_rank=0, tp=1, tp_rank=0, dp_index=1)

    def test_a_tp_rank_outside_tp_is_refused(self):
        with self.assertRaisesRegex(FineshardLoadError, "tensor-parallel rank 2 is not in 0..<2"):
            engine_parallel(dp=2, dp_rank=0, tp=2, tp_rank=2)


class FineGrainedConfig(unittest.TestCase):
    def test_sizes_come_from_finegrained_tp_config_and_default_to_zero(self):
        self.assertEqual(finegrained_sizes(ADDITIONAL), FG)
        self.assertEqual(finegrained_sizes({}), {"embedding": 0, "lm_head": 0, "o_proj": 0, "mlp": 0})
        self.assertEqual(finegrained_sizes(None)["mlp"], 0)

    def test_an_unknown_or_negative_size_is_refused_by_name(self):
        with self.assertRaisesRegex(FineshardLoadError, "unknown key 'mlp_tp_size'"):
            finegrained_sizes({"finegrained_tp_config": {"mlp_tp_size": 2}})
        with self.assertRaisesRegex(FineshardLoadError, "oproj_tensor_parallel_size must be an integer"):
            finegrained_sizes({"finegrained_tp_config": {"oproj_tensor_parallel_size": -1}})


class ManifestAgainstEngine(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.folder = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def test_every_rank_of_dp4_tp2_with_finegrained_groups_reads_its_own_global_rank_files(self):
        make_folder(self.folder)
        for d in range(4):
            for t in range(2):
                got = load(self.folder, engine(d, t))
                r = d * 2 + t
                self.assertEqual(got["w"], (f"model-rank-{r}-part-0.safetensors", "F32", (2,), [r, r + 0.5]))
                self.assertEqual(got["b"][3], [r])

    def test_a_tied_source_is_read_from_the_manifests_model_facts(self):
        manifest = make_folder(self.folder)
        self.assertFalse(source_tied(manifest))
        manifest["source"] = {"model": {"tie_word_embeddings": True}}
        self.assertTrue(source_tied(manifest))

    def test_per_tensor_hashes_are_used_when_every_tensor_has_one(self):
        make_folder(self.folder, per_tensor=True)
        m = read_manifest_json(self.folder)
        m["ranks"][5]["files"][0]["sha256"] = None  # the whole-file hash is not needed then
        write_manifest_json(self.folder, m)
        self.assertEqual(load(self.folder, engine(2, 1))["w"][3], [5, 5.5])

    def test_a_tensor_whose_hash_differs_is_refused_naming_it(self):
        make_folder(self.folder, per_tensor=True)
        m = read_manifest_json(self.folder)
        m["ranks"][5]["files"][0]["tensor_sha256"]["b"] = "0" * 64
        write_manifest_json(self.folder, m)
        with self.assertRaisesRegex(FineshardLoadError, r"model-rank-5-part-0.safetensors: tensor 'b': SHA-256 .* differs"):
            load(self.folder, engine(2, 1))

    def test_a_different_dp_or_tp_is_refused_naming_both_values(self):
        make_folder(self.folder)
        with self.assertRaisesRegex(FineshardLoadError, r"made for --dp 4, the engine runs data_parallel_size 2"):
            plan_load(self.folder, engine(1, 1, dp=2))
        with self.assertRaisesRegex(FineshardLoadError, r"made for --tp 2, the engine runs tensor_parallel_size 1"):
            plan_load(self.folder, engine(1, 0, tp=1))

    def test_different_finegrained_sizes_are_refused_naming_each_option(self):
        make_folder(self.folder)
        other = {"finegrained_tp_config": {"embedding_tensor_parallel_size": 2, "lmhead_tensor_parallel_size": 2,
                                           "mlp_tensor_parallel_size": 4}}
        with self.assertRaises(FineshardLoadError) as e:
            plan_load(self.folder, engine(0, 0, additional=other))
        self.assertIn("embedding_tensor_parallel_size = 4, the engine's additional_config.finegrained_tp_config gives 2", str(e.exception))
        self.assertIn("mlp_tensor_parallel_size = 2", str(e.exception))
        self.assertNotIn("lmhead_tensor_parallel_size", str(e.exception))
        with self.assertRaisesRegex(FineshardLoadError, "embedding_tensor_parallel_size = 4, .* gives 0"):
            plan_load(self.folder, engine(0, 0, additional={}))

    def test_a_moe_folder_made_with_or_without_expert_parallel_is_refused_by_the_other_engine(self):
        manifest = make_folder(self.folder, expert_parallel=True)
        manifest["source"] = {"model": {"n_routed_experts": 8}}
        write_manifest_json(self.folder, manifest)
        moe = EngineParallel(dp=4, dp_rank=0, tp=2, tp_rank=1, finegrained=finegrained_sizes(ADDITIONAL), expert_parallel=False)
        with self.assertRaisesRegex(FineshardLoadError, r"made with --enable-expert-parallel, the engine runs "
                                                        r"enable_expert_parallel=False \(8 routed experts\)"):
            plan_load(self.folder, moe)
        self.assertEqual(load(self.folder, EngineParallel(**{**moe.__dict__, "expert_parallel": True}))["w"][3], [1, 1.5])
        # A dense model's layout does not depend on the flag.
        manifest["source"] = {"model": {}}
        write_manifest_json(self.folder, manifest)
        self.assertEqual(load(self.folder, moe)["w"][3], [1, 1.5])

    def test_a_manifest_without_fingerprint_or_for_another_layout_or_pipeline_is_refused(self):
        make_folder(self.folder, layout="hf")
        m = read_manifest_json(self.folder)
        del m["plan_fingerprint"]
        write_manifest_json(self.folder, m)
        with self.assertRaises(FineshardLoadError) as e:
            plan_load(self.folder, engine(0, 0, pp=2))
        for text in ("plan_fingerprint is None", "--layout hf", "pipeline parallel size 2"):
            self.assertIn(text, str(e.exception))

    def test_a_known_transform_loads_and_an_unknown_one_is_refused_by_name(self):
        make_folder(self.folder)
        m = read_manifest_json(self.folder)
        pieces = m["ranks"][0]["tensors"][0]["pieces"]
        pieces.append({"source": "w", "ranges": [[0, 2]], "at": [0], "transform": {"kind": "cast", "source_dtype": "F32"}})
        write_manifest_json(self.folder, m)
        self.assertEqual(load(self.folder, engine(0, 0))["w"][3], [0, 0.5])
        pieces[-1]["transform"] = {"kind": "fp4_unpack"}
        write_manifest_json(self.folder, m)
        with self.assertRaises(FineshardLoadError) as e:
            plan_load(self.folder, engine(0, 0))
        self.assertIn("'fp4_unpack'", str(e.exception))

    def test_a_changed_byte_is_refused_before_any_tensor_is_handed_out(self):
        make_folder(self.folder)
        path = os.path.join(self.folder, "model-rank-3-part-0.safetensors")
        with open(path, "r+b") as f:
            f.seek(-1, os.SEEK_END)
            last = f.read(1)[0]
            f.seek(-1, os.SEEK_END)
            f.write(bytes([last ^ 1]))
        with self.assertRaisesRegex(FineshardLoadError, "model-rank-3-part-0.safetensors: SHA-256 .* differs"):
            load(self.folder, engine(1, 1))
        self.assertEqual(load(self.folder, engine(1, 0))["b"][3], [2])  # other ranks are unaffected

    def test_a_file_name_outside_the_folder_is_refused(self):
        make_folder(self.folder)
        m = read_manifest_json(self.folder)
        m["ranks"][0]["files"][0]["name"] = "../model-rank-0-part-0.safetensors"
        write_manifest_json(self.folder, m)
        with self.assertRaisesRegex(FineshardLoadError, "not a plain file name"):
            load(self.folder, engine(0, 0))

    def test_a_folder_with_only_partial_manifests_says_to_combine_them(self):
        make_folder(self.folder)
        os.rename(os.path.join(self.folder, "manifest.json"), os.path.join(self.folder, "manifest.ranks-0-3.json"))
        with self.assertRaisesRegex(FineshardLoadError, "fineshard manifest combine"):
            plan_load(self.folder, engine(0, 0))

    def test_a_rank_entry_whose_dp_and_tp_ranks_disagree_with_its_number_is_refused(self):
        make_folder(self.folder)
        m = read_manifest_json(self.folder)
        m["ranks"][6]["dp_rank"] = 2
        write_manifest_json(self.folder, m)
        with self.assertRaisesRegex(FineshardLoadError, "rank 6 says dp_rank 2"):
            plan_load(self.folder, engine(3, 0))


if __name__ == "__main__":
    unittest.main()
