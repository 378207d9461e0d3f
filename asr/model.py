"""Load a wav2vec2-style CTC model with its tokenizer and feature-extractor settings.

Any ``AutoModelForCTC`` id or local directory works. The recipe's transcriber keeps its tokenizer
and feature extractor in other repos, so both can be named separately; by default they come from
the model's own repo, except for the recipe's default model, whose companions are known.
Remote code is never trusted; safetensors weights are preferred.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from asr.builtin import OFFLINE_ALIAS, ModelNotFound, is_whisper, locate
from asr.contract import AsrContract
from asr.spec import DEFAULT_ASR_MODEL, DEFAULT_FEATURE_EXTRACTOR, DEFAULT_TOKENIZER, AsrModelSpec  # noqa: F401
from schemas.errors import SpeechmillError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class ModelLoadError(SpeechmillError, RuntimeError):
    reason = "model_unavailable"


@dataclass
class LoadedCtcModel:
    model: torch.nn.Module
    tokenizer: object
    blank_id: int
    do_normalize: bool
    use_attention_mask: bool
    contract: AsrContract  # the input rate and frame length this model was built for
    device: torch.device
    label: str
    dtype: torch.dtype = torch.float32

    @property
    def sample_rate(self) -> int:
        return self.contract.sample_rate


def _missing(what: str, name: str, err: Exception) -> ModelLoadError:
    offline = _offline()
    where = ("it is not a local directory and is not in the Hugging Face cache "
             "(HF_HUB_OFFLINE=1)") if offline else "it is neither a local directory nor a reachable hub id"
    first = (str(err).strip().splitlines() or [""])[0][:300]
    return ModelLoadError(f"cannot load ASR {what} {name!r}: {where}; --asr_model {OFFLINE_ALIAS} works "
                          f"offline. ({type(err).__name__}: {first})")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def check_available(spec: AsrModelSpec) -> None:
    """Fail fast, before a pipeline starts, when the model, tokenizer or feature extractor cannot be found.
    A Whisper model (``asr.builtin.is_whisper``) is checked by ``asr.whisper.locate`` instead."""
    if is_whisper(spec.model):
        try:
            locate(spec.model, spec.revision)
        except ModelNotFound as e:
            raise ModelLoadError(str(e)) from e
        return
    from transformers import AutoConfig, AutoFeatureExtractor, AutoTokenizer
    try:
        AutoConfig.from_pretrained(spec.model, revision=spec.revision, trust_remote_code=False,
                                   local_files_only=_offline())
    except Exception as e:
        raise _missing("model", spec.model, e) from e
    try:
        AutoTokenizer.from_pretrained(spec.tokenizer_id, trust_remote_code=False, local_files_only=_offline())
    except Exception as e:
        raise _missing("tokenizer", spec.tokenizer_id, e) from e
    try:
        AutoFeatureExtractor.from_pretrained(spec.feature_extractor_id, trust_remote_code=False,
                                             local_files_only=_offline())
    except Exception as e:
        raise _missing("feature extractor", spec.feature_extractor_id, e) from e


@contextlib.contextmanager
def _no_progress_bar():
    """transformers draws a progress bar while it loads weights, with no newline after it: in a
    worker process's log (Dask workers, Beam's) the worker's next line would be glued to it."""
    from transformers.utils import logging as hf_logging
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def load_ctc_model(spec: AsrModelSpec) -> LoadedCtcModel:
    with _no_progress_bar():
        return _load_ctc_model(spec)


def _load_ctc_model(spec: AsrModelSpec) -> LoadedCtcModel:
    from transformers import AutoFeatureExtractor, AutoModelForCTC, AutoTokenizer
    try:
        model = AutoModelForCTC.from_pretrained(spec.model, revision=spec.revision,
                                                trust_remote_code=False, use_safetensors=None,
                                                local_files_only=_offline())
    except Exception as e:
        raise _missing("model", spec.model, e) from e
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer_id, trust_remote_code=False,
                                                  local_files_only=_offline())
    except Exception as e:
        raise _missing("tokenizer", spec.tokenizer_id, e) from e
    try:
        fe = AutoFeatureExtractor.from_pretrained(spec.feature_extractor_id, trust_remote_code=False,
                                                  local_files_only=_offline())
    except Exception as e:
        raise _missing("feature extractor", spec.feature_extractor_id, e) from e
    device = torch.device(spec.device)
    dtype = DTYPES[spec.dtype]
    model.to(device=device, dtype=dtype).eval()
    blank = model.config.pad_token_id
    if blank is None:
        blank = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return LoadedCtcModel(
        model=model, tokenizer=tokenizer, blank_id=int(blank),
        do_normalize=bool(getattr(fe, "do_normalize", True)),
        use_attention_mask=bool(getattr(fe, "return_attention_mask", False)),
        contract=AsrContract.of_model(model, fe), device=device, label=spec.label, dtype=dtype)
