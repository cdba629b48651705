"""Fused CPU kernel of the local relation aggregation (C + OpenMP, loaded with ctypes).

Status: computes exactly the function of `lr_ops.local_relation_reference` (tests check fp64 to 1e-10 and
gradcheck). The forward writes only the output and a per-pixel log-sum-exp; the backward recomputes the
weights, so nothing of size k*k is stored (memory ~ the inputs). fp32 uses a vectorisable polynomial
exp (Cephes, ~1e-7 relative error), fp64 uses libm.

The source (csrc/lr_cpu.c) is compiled on first use with the system C compiler (`$CC`, default `cc`)
into a cache keyed by the source, the compiler and the CPU (`$RBLR_CACHE` or ~/.cache/robustbench_lr).
It links the same OpenMP runtime as torch (libgomp, found by soname), so both share one thread pool.
Without a compiler, or with RBLR_NO_CKERNEL=1, `impl="auto"` falls back to the eager shift path.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch
from torch import Tensor

from . import lr_ops

log = logging.getLogger(__name__)

_PRELUDE = r"""
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* exp for float, vectorisable (Cephes expf polynomial; |rel. error| < 2e-7 on [-87, 88]). Rounding by the
 * 1.5 * 2^23 trick and a union bit-cast, because floorf and memcpy stop GCC from vectorising the loop. */
static inline float lr_expf(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float fx = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float z = x - fx * 0.693359375f;
    z = z - fx * -2.12194440e-4f;
    float y = 1.9875691500e-4f;
    y = y * z + 1.3981999507e-3f;
    y = y * z + 8.3334519073e-3f;
    y = y * z + 4.1665795894e-2f;
    y = y * z + 1.6666665459e-1f;
    y = y * z + 5.0000001201e-1f;
    y = y * z * z + z + 1.0f;
    union { int i; float f; } u;
    u.i = ((int)fx + 127) << 23;
    return y * u.f;
}
"""

_APPEARANCE = {None: 0, "sqdiff": 1, "absdiff": 2, "dot": 3}
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_failed: str | None = None


def source() -> str:
    """The C source compiled for float and double."""
    tmpl = (Path(__file__).parent / "csrc" / "lr_cpu.c").read_text()
    f32 = tmpl.replace("scalar_t", "float").replace("SUFFIX", "f32").replace("EXP(", "lr_expf(").replace("LOG(", "logf(")
    f64 = tmpl.replace("scalar_t", "double").replace("SUFFIX", "f64").replace("EXP(", "exp(").replace("LOG(", "log(")
    return _PRELUDE + f32 + f64


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            lines = [ln for ln in fh if ln.startswith(("model name", "flags"))][:2]
        return "".join(lines)
    except OSError:
        return platform.processor() + platform.machine()


def _cache_dir() -> Path:
    base = os.environ.get("RBLR_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                                                          "robustbench_lr")
    return Path(base) / "kernels"


def _compile(src: str, out: Path) -> None:
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise RuntimeError(f"no C compiler ({cc!r} not found)")
    with tempfile.TemporaryDirectory() as tmp:
        cfile = Path(tmp) / "lr_cpu.c"
        cfile.write_text(src)
        base = [cc, "-O3", "-std=gnu11", "-fPIC", "-shared", "-fno-math-errno", str(cfile), "-o"]
        errors = []
        for extra in (["-march=native", "-fopenmp"], ["-fopenmp"], ["-march=native"], []):
            target = Path(tmp) / "lr_cpu.so"
            res = subprocess.run([*base, str(target), *extra, "-lm"], capture_output=True, text=True)
            if res.returncode == 0:
                out.parent.mkdir(parents=True, exist_ok=True)
                fd, part = tempfile.mkstemp(dir=out.parent, prefix=".lr_cpu.", suffix=".so")
                os.close(fd)
                shutil.copyfile(target, part)
                os.replace(part, out)  # atomic: concurrent processes never load a half-written library
                if "-fopenmp" not in extra:
                    log.warning("LR CPU kernel compiled without OpenMP: it runs single-threaded.")
                return
            errors.append(res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}")
        raise RuntimeError("compiling the LR CPU kernel failed: " + " | ".join(errors))


def _load() -> ctypes.CDLL | None:
    global _lib, _failed
    if _lib is not None or _failed is not None:
        return _lib
    with _lock:
        if _lib is not None or _failed is not None:
            return _lib
        if os.environ.get("RBLR_NO_CKERNEL"):
            _failed = "disabled by RBLR_NO_CKERNEL"
            return None
        src = source()
        cc = os.environ.get("CC", "cc")
        try:
            ver = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
        except OSError:
            ver = []
        key = hashlib.sha256((src + "".join(ver) + _cpu_signature()).encode()).hexdigest()[:16]
        path = _cache_dir() / key / "lr_cpu.so"
        try:
            if not path.is_file():
                log.info("compiling the LR CPU kernel (once per machine) into %s", path.parent)
                _compile(src, path)
            lib = ctypes.CDLL(str(path))
            vp, ci = ctypes.c_void_p, ctypes.c_int
            for suf in ("f32", "f64"):
                getattr(lib, f"lr_forward_{suf}").argtypes = [vp] * 6 + [ci] * 12
                getattr(lib, f"lr_forward_{suf}").restype = None
                getattr(lib, f"lr_backward_{suf}").argtypes = [vp] * 10 + [ci] * 12
                getattr(lib, f"lr_backward_{suf}").restype = None
            _lib = lib
        except (OSError, RuntimeError) as exc:
            _failed = str(exc)
            log.warning("LR CPU kernel unavailable (%s); using the eager shift implementation.", exc)
        return _lib


def available(device: torch.device | None = None) -> bool:
    """True when the kernel is compiled (or compiles now) and `device` is the CPU."""
    return (device is None or torch.device(device).type == "cpu") and _load() is not None


def _ptr(t: Tensor | None) -> int | None:
    return t.data_ptr() if t is not None else None


class _LocalRelationCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, q: Tensor | None, key: Tensor | None, geo: Tensor | None, k: int, stride: int,
                appearance: str | None, border: str, g: int) -> Tensor:
        lib = _load()
        n, c, h, w = x.shape
        ho, wo = lr_ops.output_size(h, w, stride)
        x, q, key, geo = (t.contiguous() if t is not None else None for t in (x, q, key, geo))
        out = x.new_empty(n, c, ho, wo)
        lse = x.new_empty(n, g, ho, wo)
        suf = "f32" if x.dtype == torch.float32 else "f64"
        getattr(lib, f"lr_forward_{suf}")(_ptr(x), _ptr(q), _ptr(key), _ptr(geo), _ptr(out), _ptr(lse), n, c, g, h, w,
                                         ho, wo, k, stride, _APPEARANCE[appearance], int(border == "mask"),
                                         torch.get_num_threads())
        ctx.save_for_backward(x, q, key, geo, lse)
        ctx.cfg = (k, stride, appearance, border, g)
        return out

    @staticmethod
    def backward(ctx, dout: Tensor):
        lib = _load()
        x, q, key, geo, lse = ctx.saved_tensors
        k, stride, appearance, border, g = ctx.cfg
        need_x, need_q, need_key, need_geo = ctx.needs_input_grad[:4]
        n, c, h, w = x.shape
        ho, wo = lse.shape[-2:]
        dout = dout.contiguous()
        dx = torch.zeros_like(x) if need_x else None
        dq = torch.empty_like(q) if (need_q and q is not None) else None
        dkey = torch.zeros_like(key) if (need_key and key is not None) else None
        dgeo_part = x.new_empty(n, g, k * k) if (need_geo and geo is not None) else None
        suf = "f32" if x.dtype == torch.float32 else "f64"
        getattr(lib, f"lr_backward_{suf}")(
            _ptr(x), _ptr(q), _ptr(key), _ptr(geo), _ptr(lse), _ptr(dout), _ptr(dx), _ptr(dq), _ptr(dkey),
            _ptr(dgeo_part), n, c, g, h, w, ho, wo, k, stride, _APPEARANCE[appearance], int(border == "mask"),
            torch.get_num_threads())
        dgeo = dgeo_part.sum(0) if dgeo_part is not None else None
        return dx, dq, dkey, dgeo, None, None, None, None, None


def _cpu_impl(x: Tensor, q: Tensor | None, key: Tensor | None, geo: Tensor | None, *, kernel_size: int, stride: int,
              appearance: str | None, border: str, groups: int) -> Tensor:
    ok = (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and (key is not None or geo is not None)
          and _load() is not None)
    if not ok:
        return lr_ops.IMPLS["shift"](x, q, key, geo, kernel_size=kernel_size, stride=stride, appearance=appearance,
                                     border=border, groups=groups)
    return _LocalRelationCPU.apply(x, q, key, geo, kernel_size, stride, appearance, border, groups)


lr_ops.IMPLS["cpu"] = _cpu_impl
lr_ops.AVAILABLE["cpu"] = available
lr_ops.AUTO_ORDER["cpu"] = ("cpu", "shift")
