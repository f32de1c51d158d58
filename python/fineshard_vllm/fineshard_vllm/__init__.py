"""fineshard's vLLM plugin: registers the `fineshard` load format.

Installed with `pip install python/fineshard_vllm`, vLLM loads it in every process through the
`vllm.general_plugins` entry point; then `LLM(model=OUT, load_format="fineshard")` (or `vllm serve OUT
--load-format fineshard`) loads a fineshard output folder made with `--layout vllm`. See docs/LOADING.md.
"""

LOAD_FORMAT = "fineshard"


def register() -> None:
    """The entry point vLLM calls: registers the loader unless a previous call did."""
    from vllm.model_executor.model_loader import _LOAD_FORMAT_TO_MODEL_LOADER, register_model_loader

    from .loader import FineshardModelLoader

    if _LOAD_FORMAT_TO_MODEL_LOADER.get(LOAD_FORMAT) is not FineshardModelLoader:
        register_model_loader(LOAD_FORMAT)(FineshardModelLoader)
