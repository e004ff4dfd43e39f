"""srpo: safety alignment for vision-language models by risk disentanglement and iterative RLAIF.

Importing srpo is cheap: torch, transformers and TRL are imported inside the steps that need them.
"""

import logging

__version__ = "0.1.0"


def _drop_bnb_kernel_warning(record: logging.LogRecord) -> bool:
    # bitsandbytes warns on import, whenever peft or transformers' integrations load it, that an optional CPU 4-bit
    # kernel (the hub-fetching `kernels` package) is missing: noise on every command. srpo.models says it once, when
    # a QLoRA model is actually loaded.
    return "gemm_4bit_forward" not in str(record.msg)


logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_drop_bnb_kernel_warning)
