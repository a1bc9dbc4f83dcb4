"""Run `python -m llama_cpp.server` with llama.cpp's repacked weight buffers off.

The same workaround `turnkit.models.llamacpp` applies in process: on CPUs with AMX, the repacked
kernels of a machine-tuned llama.cpp build crash in batched prompt decoding.
"""

import runpy

from turnkit.models.llamacpp import _without_weight_repacking

if __name__ == "__main__":
    with _without_weight_repacking():
        runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
