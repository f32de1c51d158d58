"""The `fineshard` load format: vLLM's model loader for fineshard output (`--layout vllm`).

Each worker opens the files of its **global** rank (dp_rank * TP + tp_rank), after checking
`manifest.json` against the running engine (DP, TP, the fine-grained sizes of
`additional_config.finegrained_tp_config`, layout, plan fingerprint), and copies every tensor into the
parameter of the same name and shape; the bytes it copies are the bytes it checked against the manifest's
SHA-256. Every parameter must be loaded, like `sharded_state`.
"""

import os
import warnings

import torch
from torch import nn
from vllm.config import ModelConfig, VllmConfig, get_current_vllm_config
from vllm.config.load import LoadConfig
from vllm.distributed import get_tensor_model_parallel_rank
from vllm.logger import init_logger
from vllm.model_executor.model_loader.base_loader import BaseModelLoader
from vllm.model_executor.model_loader.sharded_state_loader import ShardedStateLoader

from . import manifest as fm
from .manifest import EngineParallel, FineshardLoadError, plan_load, read_rank_file

# Under "vllm." so that vLLM's log handler prints it.
logger = init_logger("vllm.fineshard_vllm.loader")

TORCH_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def engine_parallel(vllm_config: VllmConfig) -> EngineParallel:
    """The running worker's place in the engine, from vLLM's configuration."""
    pc = vllm_config.parallel_config
    additional = vllm_config.additional_config
    return fm.engine_parallel(
        dp=pc.data_parallel_size,
        dp_rank=pc.data_parallel_rank,
        tp=pc.tensor_parallel_size,
        tp_rank=get_tensor_model_parallel_rank(),
        pp=pc.pipeline_parallel_size,
        additional_config=additional if isinstance(additional, dict) else {},
        dp_index=getattr(pc, "data_parallel_index", None),
        expert_parallel=bool(pc.enable_expert_parallel),
    )


# What the last load in this process read (global rank, files, tensor count): tests read it to prove which
# files a DP rank opened.
LAST_LOAD: dict = {}


class FineshardModelLoader(BaseModelLoader):
    """Loads `fineshard shard --layout vllm` output by global rank. `model_loader_extra_config` takes no
    keys; the folder is the model path (`model_weights` when set)."""

    def __init__(self, load_config: LoadConfig):
        super().__init__(load_config)
        extra = dict(load_config.model_loader_extra_config or {})
        if extra:
            raise ValueError(f"load_format 'fineshard' takes no model_loader_extra_config keys, got {sorted(extra)}")
        self._vllm_config = None

    def download_model(self, model_config: ModelConfig) -> None:
        pass  # local folders only: fineshard output is made and shipped per rank

    def load_model(self, vllm_config: VllmConfig, model_config: ModelConfig, prefix: str = "") -> nn.Module:
        self._vllm_config = vllm_config
        manifest = fm.read_manifest(model_config.model_weights or model_config.model)
        if fm.source_tied(manifest) and getattr(model_config, "word_embeddings_untied_by_checkpoint", False):
            # vLLM (0.32) unties the embeddings of a model whose folder holds an `lm_head` tensor
            # (`ModelConfig.maybe_untie_word_embeddings`, skipped only for its own sharded formats); the
            # shards of a tied model hold the shared table once, as `lm_head.weight`, so tie it again.
            for config in {id(c): c for c in (model_config.hf_config, model_config.hf_config.get_text_config())}.values():
                config.tie_word_embeddings = True
            model_config.word_embeddings_untied_by_checkpoint = False
        return super().load_model(vllm_config=vllm_config, model_config=model_config, prefix=prefix)

    def load_weights(self, model: nn.Module, model_config: ModelConfig) -> None:
        folder = model_config.model_weights or model_config.model
        engine = engine_parallel(self._vllm_config or get_current_vllm_config())
        manifest, files = plan_load(folder, engine)
        state = ShardedStateLoader._filter_subtensors(model.state_dict())
        model_name = type(model).__name__
        loaded = 0
        for path, record, tensors in files:
            for name, dtype, shape, data in read_rank_file(path, record, tensors):
                param = state.pop(name, None)
                if param is None:
                    raise FineshardLoadError(
                        f"{path}: tensor '{name}' is not a parameter of vLLM's {model_name} (or was loaded twice); "
                        "was the folder made for another vLLM version or architecture?")
                if tuple(param.shape) != shape:
                    raise FineshardLoadError(
                        f"{path}: tensor '{name}' has shape {list(shape)}, vLLM's {model_name} expects {list(param.shape)} "
                        f"(global rank {engine.global_rank}, DP {engine.dp}, TP {engine.tp})")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the mapping is read-only; copy_ only reads it
                    source = torch.frombuffer(data, dtype=TORCH_DTYPES[dtype]) if len(data) else torch.empty(0, dtype=TORCH_DTYPES[dtype])
                if param.dtype != source.dtype:
                    logger.warning_once("fineshard: converting %s tensors to the engine's %s", dtype, param.dtype)
                param.data.copy_(source.reshape(shape))
                loaded += 1
        if state:
            raise FineshardLoadError(
                f"{folder}: global rank {engine.global_rank} has no tensor for {len(state)} parameter(s) of vLLM's "
                f"{model_name}: {tuple(sorted(state))[:8]}")
        LAST_LOAD.clear()
        LAST_LOAD.update(global_rank=engine.global_rank, dp_rank=engine.dp_rank, tp_rank=engine.tp_rank,
                         files=[os.path.basename(p) for p, _, _ in files], tensors=loaded)
        logger.info(
            "fineshard: loaded %d tensors of global rank %d (DP rank %d of %d, TP rank %d of %d, plan %s) from %s",
            loaded, engine.global_rank, engine.dp_rank, engine.dp, engine.tp_rank, engine.tp,
            manifest["plan_fingerprint"][:12], folder)
