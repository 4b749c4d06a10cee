"""Which GGUF model + projector pairs work together, and which chat template they need."""

from __future__ import annotations

from typing import Mapping

from ..errors import ModelError
from .gguf_header import GgufInfo

# family -> llama_cpp.llama_chat_format handler. The handler supplies the chat
# template the model was trained with; a wrong one gives poor or empty answers.
CHAT_HANDLERS: Mapping[str, str] = {
    "llava-1-5": "Llava15ChatHandler",  # LLaVA 1.5, BakLLaVA, ShareGPT4V, obsidian
    # LLaVA 1.6 / NeXT (mmproj with grid pinpoints). Not Llava16ChatHandler: in llama-cpp-python
    # 0.3.36 its template has no USER:/ASSISTANT: turns ("<system><image>\n<question>Answer:"),
    # unlike its own documented example and llama-server's "vicuna" (tests/test_family_archs.py).
    # mtmd tiles the image from the mmproj's grid pinpoints whatever the handler.
    "llava-1-6": "Llava15ChatHandler",
    "moondream": "MoondreamChatHandler",  # moondream2
    "nanollava": "NanoLlavaChatHandler",  # nanoLLaVA (ChatML)
    "qwen2.5-vl": "Qwen25VLChatHandler",  # Qwen2.5-VL (projector qwen2.5vl_merger)
    "minicpm-v-2.6": "MiniCPMv26ChatHandler",  # MiniCPM-V 2.6 (projector resampler)
}
FAMILIES = ("auto", *CHAT_HANDLERS)

# projector type -> (tensor, ggml axis) holding the size of the projected image
# embeddings, as clip_n_mmproj_embd() reads it; it must equal the text model's n_embd.
_PROJECTOR_OUTPUT = {
    "mlp": ("mm.2.weight", 1),
    "mlp_norm": ("mm.3.bias", 0),
    "ldp": ("mm.model.mb_block.1.block.2.1.bias", 0),
    "ldpv2": ("mm.model.peg.0.bias", 0),
    "resampler": ("resampler.proj.weight", 0),
    # clip.cpp loads the merger's second layer from mm.2 (conversion/qwenvl.py writes mm.0, mm.2)
    "qwen2vl_merger": ("mm.2.bias", 0),
    "qwen2.5vl_merger": ("mm.2.bias", 0),
    "gemma3": ("mm.input_projection.weight", 0),
    "idefics3": ("mm.model.fc.weight", 1),
}


def projector_output_dim(mmproj: GgufInfo) -> int | None:
    """Size of the image embeddings an mmproj produces, when its projector type is known."""
    kind = str(mmproj.fields.get("clip.projector_type", ""))
    if kind == "mlp" and "mm.3.weight" in mmproj.tensors:
        kind = "mlp_norm"  # clip.cpp makes the same switch for Yi-style LLaVA
    tensor, axis = _PROJECTOR_OUTPUT.get(kind, (None, 0))
    shape = mmproj.tensors.get(tensor)
    return int(shape[axis]) if shape is not None and len(shape) > axis else None


def embedding_length(model: GgufInfo) -> int | None:
    value = model.fields.get(f"{model.arch}.embedding_length")
    return int(value) if value is not None else None


def check_pair(model: GgufInfo, mmproj: GgufInfo) -> None:
    """ModelError when the two files cannot work together, before llama.cpp loads them."""
    if model.arch == "clip":
        raise ModelError(
            f"The model file {model.path} is a vision projector (mmproj), not a language model. "
            "Give the text model GGUF as the model and this file as the mmproj."
        )
    if mmproj.arch != "clip":
        raise ModelError(
            f"The mmproj file {mmproj.path} is a '{mmproj.arch or 'unknown'}' model, not a vision "
            "projector: a model without vision support cannot caption images. Give the mmproj "
            "GGUF that belongs to the vision model (its name usually contains 'mmproj')."
        )
    has_vision = mmproj.fields.get("clip.has_vision_encoder")
    if not has_vision:
        raise ModelError(
            f"The mmproj file {mmproj.path} has no vision encoder (an audio projector?). "
            "Give the image projector of a vision-language model."
        )
    projected, expected = projector_output_dim(mmproj), embedding_length(model)
    if projected and expected and projected != expected:
        raise ModelError(
            f"The mmproj file {mmproj.path} does not match the model {model.path}: it makes image "
            f"embeddings of size {projected}, the model expects {expected}. Use the mmproj "
            "released with this model."
        )


def guess_family(model: GgufInfo, mmproj: GgufInfo) -> str:
    """The chat family from projector metadata, then file and model names; llava-1-5 otherwise."""
    kind = str(mmproj.fields.get("clip.projector_type", ""))
    if kind == "qwen2.5vl_merger":
        return "qwen2.5-vl"
    if kind == "resampler":
        return "minicpm-v-2.6"
    names = " ".join(
        [model.path.name, mmproj.path.name, model.name, mmproj.name]
    ).lower().replace("_", "-")
    for needle, family in (
        ("moondream", "moondream"),
        ("nanollava", "nanollava"),
        ("minicpm", "minicpm-v-2.6"),
        ("qwen2.5-vl", "qwen2.5-vl"),
        ("llava-v1.6", "llava-1-6"),
        ("llava-1.6", "llava-1-6"),
        ("llava-next", "llava-1-6"),
    ):
        if needle in names:
            return family
    if mmproj.fields.get("clip.vision.mm_patch_merge_type") == "spatial_unpad":
        return "llava-1-6"  # LLaVA 1.6 tiles large images; 1.5 does not
    return "llava-1-5"
