"""Python interface, following fairseq's `from_pretrained` / GeneratorHubInterface convention.

    from fastdiss_fairseq.models.fastdiss_transformer import FastDiSSTransformerModel

    model = FastDiSSTransformerModel.from_pretrained("model_dir")  # checkpoint_best.pt, dict.*.txt, bpecodes
    model.translate(["Hallo Welt"], decoding_steps=5)              # -> ["..."]

As with fairseq's own hub models, the folder holds the checkpoint, the dictionaries
(dict.SRC.txt, dict.TGT.txt) and the BPE codes (`bpecodes`, found automatically); raw text
is Moses-tokenized and BPE-encoded on the way in and decoded on the way out.

fairseq's GeneratorHubInterface builds the generator with `task.build_generator(models, args)`
on every call, where `args` is the checkpoint's generation cfg plus the call's keyword
arguments; the task reads the FastDiSS options from there, so `translate(..., decoding_steps=1,
length_beam=3)` applies to that call only, and the checkpoint's (or from_pretrained's) values
are the defaults.
"""

import os
from dataclasses import fields
from typing import List, Optional, Union

import torch
from fairseq import hub_utils
from omegaconf import open_dict

from .errors import FastDiSSError
from .generator import GeneratorConfig

GENERATION_OPTIONS = frozenset(f.name for f in fields(GeneratorConfig))


class FastDiSSHubInterface(hub_utils.GeneratorHubInterface):
    """fairseq's GeneratorHubInterface with a FastDiSS-shaped translate()."""

    def __init__(self, cfg, task, models):
        super().__init__(cfg, task, models)
        # fairseq builds the tokenizer itself, not through the task: ask the task again, so that
        # a folder with the data's prepare.json tokenizes as the data were (prepared_text.py)
        self.tokenizer = task.build_tokenizer(cfg.tokenizer)

    def translate(self, sentences: Union[str, List[str]], decoding_steps: Optional[int] = None,
                  verbose: bool = False, **gen_overrides) -> Union[str, List[str]]:
        """Translates a sentence or a list of them (raw text in, detokenized text out).

        decoding_steps and gen_overrides (length_beam, noise_samples, candidate_ranking,
        clamping, inference_self_conditioning, seed) apply to this call only; by default the
        values the model was loaded with. Noise is seeded by the seed and the sentence's
        position in the call, so the same call gives the same output. An empty sentence gives
        an empty translation.
        """
        unknown = set(gen_overrides) - GENERATION_OPTIONS
        if unknown:
            raise TypeError(f"unknown generation option(s) {sorted(unknown)}; "
                            f"choose from {sorted(GENERATION_OPTIONS)}")
        check_text(sentences)
        if decoding_steps is not None:
            gen_overrides["decoding_steps"] = decoding_steps
        return self.sample(sentences, beam=1, verbose=verbose, **gen_overrides)


def check_text(sentences) -> None:
    """fairseq's encode() would translate None or 3 as the words "None" and "3"."""
    if isinstance(sentences, str):
        return
    if not isinstance(sentences, (list, tuple)):
        raise TypeError(f"translate() takes a string or a list of strings, got {type(sentences).__name__}")
    for i, sentence in enumerate(sentences):
        if not isinstance(sentence, str):
            raise TypeError(f"translate() takes a string or a list of strings; item {i} is "
                            f"{type(sentence).__name__}")


def from_pretrained(model_name_or_path: str, checkpoint_file: str = "checkpoint_best.pt",
                    data_name_or_path: str = ".", bpe: Optional[str] = "subword_nmt",
                    bpe_codes: Optional[str] = None, tokenizer: Optional[str] = "moses",
                    **kwargs) -> FastDiSSHubInterface:
    """Loads a FastDiSS checkpoint for translation from Python.

    model_name_or_path: a folder (or a fairseq model archive) with checkpoint_file in it;
    data_name_or_path: the folder with dict.*.txt, relative to it when it starts with '.';
    bpe / bpe_codes: the BPE (by default subword-nmt with the folder's `bpecodes`);
    tokenizer: 'moses' (its languages are the model's; with the data folder's prepare.json in the
        folder, text is tokenized exactly as the data's test split was) or None for pre-tokenized text;
    kwargs: overrides of the checkpoint's options, e.g. decoding_steps=3, length_beam=3, cpu=True,
        fp32_matmul_precision="medium" (default: the process's current precision, no CPU tuning).
    """
    if os.path.isdir(model_name_or_path):
        model_name_or_path = os.path.abspath(model_name_or_path)  # the BPE codes path stays valid after a chdir
        for name in checkpoint_file.split(os.pathsep):
            if not os.path.isfile(os.path.join(model_name_or_path, name)):
                raise FastDiSSError(f"no checkpoint {name} in {model_name_or_path}")
        if bpe == "subword_nmt" and bpe_codes is None and not any(
            os.path.isfile(os.path.join(model_name_or_path, f)) for f in ("bpecodes", "code")
        ):
            raise FastDiSSError(f"no bpecodes in {model_name_or_path}: copy the data folder's bpecodes "
                                "next to the checkpoint or pass bpe_codes=PATH")
    explicit_langs = {k for k in ("source_lang", "target_lang") if k in kwargs}
    # The task applies process-wide CPU settings when it is set up (cpu_performance.py). A library
    # call keeps the caller's process as it is unless asked: the checkpoint's training-time
    # choice does not carry over. Pass fp32_matmul_precision="medium", no_cpu_tuning=False for speed.
    kwargs.setdefault("fp32_matmul_precision", torch.get_float32_matmul_precision())
    kwargs.setdefault("no_cpu_tuning", True)
    loaded = hub_utils.from_pretrained(
        model_name_or_path, checkpoint_file, data_name_or_path, archive_map=None,
        bpe=bpe, tokenizer=tokenizer, **kwargs,
    )
    cfg, task = loaded["args"], loaded["task"]
    with open_dict(cfg):
        if bpe_codes is not None:  # hub_utils lets the folder's bpecodes win; an explicit path wins here
            cfg.bpe.bpe_codes = bpe_codes
        if tokenizer == "moses":  # Moses rules are per language; its config defaults to English
            for key in {"source_lang", "target_lang"} - explicit_langs:
                cfg.tokenizer[key] = getattr(task.cfg, key)
    return FastDiSSHubInterface(cfg, task, loaded["models"])
