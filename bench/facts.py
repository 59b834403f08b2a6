"""The facts block of a device run: GPU, driver, CUDA, package versions, tool paths, the
shared-memory limits Triton kernels must fit, and which optional packages are present.

    python bench/facts.py [--json FILE]     # bench/device.sh runs it first

Tool paths found by device.sh come in through the environment (FASTSIM_NVCC, FASTSIM_SANITIZER).
Never fails: what cannot be found is reported as such.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys

OPTIONAL = ["soundfile", "matplotlib", "tqdm", "transformers", "safetensors", "pytest", "hypothesis", "numpy",
            "pybind11", "scikit_build_core", "cmake", "ninja", "pip", "pynvml", "cka", "faiss", "ckatorch"]


def run(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (out.stdout or out.stderr).strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable ({type(exc).__name__})"


def version(dist: str) -> str | None:
    for name in (dist, dist.replace("_", "-")):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return None


def driver_cuda_version() -> str:
    """cuDriverGetVersion from libcuda (the newest CUDA the driver supports)."""
    try:
        import ctypes

        v = ctypes.c_int()
        ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(v))
        return f"{v.value // 1000}.{v.value % 1000 // 10}"
    except (OSError, AttributeError) as exc:
        return f"unavailable ({exc})"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", help="also write the facts to this file")
    args = ap.parse_args()
    facts: dict[str, object] = {}

    def fact(key: str, value: object) -> None:
        facts[key] = value
        print(f"{key:<28} {value}", flush=True)

    fact("versions", ", ".join(f"{d} {version(d) or 'absent'}" for d in ("torch", "triton", "transformers", "numpy", "pytest")))
    fact("host", f"{platform.node()} ({platform.platform()}), {os.cpu_count()} CPUs")
    fact("python", f"{sys.executable} ({platform.python_version()})")
    fact("python on PATH", {n: shutil.which(n) for n in ("python", "python3", "pip", "pip3")})
    fact("nvcc", os.environ.get("FASTSIM_NVCC") or shutil.which("nvcc") or "not found")
    if facts["nvcc"] != "not found":
        fact("nvcc version", run([str(facts["nvcc"]), "--version"]).splitlines()[-1:])
    fact("cmake / ninja", f"{shutil.which('cmake') or 'not found'} / {shutil.which('ninja') or 'not found'}")
    fact("compute-sanitizer", os.environ.get("FASTSIM_SANITIZER") or shutil.which("compute-sanitizer") or "not found")
    smi = shutil.which("nvidia-smi")
    fact("nvidia-smi", run([smi, "--query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit",
                            "--format=csv,noheader"]) if smi else "not found")
    try:
        import torch

        fact("torch", f"{torch.__version__} (CUDA {torch.version.cuda}, cuDNN "
                      f"{torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None})")
        fact("cuda available", torch.cuda.is_available())
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            fact("gpu", f"{p.name}, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, {p.total_memory / 2**30:.1f} GiB")
            for attr in ("shared_memory_per_block_optin", "shared_memory_per_block", "shared_memory_per_multiprocessor",
                         "regs_per_multiprocessor", "max_threads_per_multi_processor", "L2_cache_size", "warp_size"):
                if hasattr(p, attr):
                    fact(f"  {attr}", getattr(p, attr))
            fact("gpu count", torch.cuda.device_count())
            free, total = torch.cuda.mem_get_info(0)
            fact("gpu memory free", f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB")
            fact("driver CUDA version", driver_cuda_version())
    except Exception as exc:  # noqa: BLE001 - facts never fail
        fact("torch", f"import failed: {exc}")
    try:
        import triton

        fact("triton", triton.__version__)
        try:
            import torch

            if torch.cuda.is_available():
                props = triton.runtime.driver.active.utils.get_device_properties(0)
                fact("triton max_shared_mem", props.get("max_shared_mem"))
                fact("triton target", triton.runtime.driver.active.get_current_target())
        except Exception as exc:  # noqa: BLE001
            fact("triton device query", f"failed: {exc}")
    except Exception as exc:  # noqa: BLE001
        fact("triton", f"import failed: {exc}")
    present, absent = {}, []
    for name in OPTIONAL:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            absent.append(name)
        else:
            present[name] = version({"cka": "pytorch-cka", "faiss": "faiss-cpu"}.get(name, name)) or "?"
    fact("optional present", present)
    fact("optional absent", absent)
    here = os.path.dirname(os.path.abspath(__file__))
    wheels = sorted(os.listdir(os.path.join(here, "wheels"))) if os.path.isdir(os.path.join(here, "wheels")) else []
    fact("bench/wheels", wheels or "none (pytorch-cka rows fall back to the inline computation)")
    try:
        import fastsim
        import fastsim.native as native

        fact("fastsim", f"{fastsim.__version__} from {os.path.dirname(fastsim.__file__)}; _C built: {native.available()}, "
                        f"CUDA kernels: {native.cuda_compiled()}")
    except Exception as exc:  # noqa: BLE001
        fact("fastsim", f"not importable yet ({type(exc).__name__}: {exc})")
    for key in ("TRITON_INTERPRET", "CUDA_VISIBLE_DEVICES", "CUDA_HOME", "CUDACXX", "FASTSIM_CUDA"):
        if os.environ.get(key):
            fact(f"env {key}", os.environ[key])
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(facts, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
