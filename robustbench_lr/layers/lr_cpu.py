"""Fused CPU kernel of the local relation aggregation (C + OpenMP, loaded with ctypes).

Status: computes exactly the function of `lr_ops.local_relation_reference` (tests check fp64 to 1e-10,
forward and every gradient, and gradcheck). The forward writes only the output and a per-pixel
log-sum-exp; the backward recomputes the weights (and reads the saved output for D = sum dout * out), so
nothing of size k*k is stored (memory ~ the inputs). The algorithm (polyphase planes, so every stride runs
contiguous vector loads; chunks of 16 pixels in GCC vector registers) is described in csrc/lr_cpu.c. fp32
uses a polynomial exp (Cephes, ~2e-7 relative error), fp64 uses libm. Queries and keys are read through
strides, so `local_relation_fused` takes the fused key/query projection's output without a copy and
returns its gradient as one tensor. Speed: reports/benchmarks.md (CPU only; 2-core AMD EPYC).

The sources (csrc/lr_cpu_planes.c + csrc/lr_cpu.c) are compiled on first use with the system C compiler
(`$CC`, default `cc`)
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

/* exp for 16 floats at a time (GCC vector extensions; Cephes expf polynomial, |rel. error| < 2e-7 on
 * [-87, 88]). Rounding by the 1.5 * 2^23 trick; inputs are clamped to that range by lane-wise blends. */
typedef float lr_vf32 __attribute__((vector_size(64), aligned(4)));
typedef int lr_vi32 __attribute__((vector_size(64), aligned(4)));
typedef double lr_vf64 __attribute__((vector_size(128), aligned(8)));
typedef long long lr_vi64 __attribute__((vector_size(128), aligned(8)));

static inline lr_vf32 lr_vexpf(lr_vf32 x) {
    const lr_vf32 lo = (((lr_vf32){0}) - 87.0f), hi = (((lr_vf32){0}) + 88.0f);
    x = (lr_vf32)(((lr_vi32)(x < lo) & (lr_vi32)lo) | (~(lr_vi32)(x < lo) & (lr_vi32)x));
    x = (lr_vf32)(((lr_vi32)(x > hi) & (lr_vi32)hi) | (~(lr_vi32)(x > hi) & (lr_vi32)x));
    const lr_vf32 fx = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    lr_vf32 z = x - fx * 0.693359375f;
    z = z - fx * -2.12194440e-4f;
    lr_vf32 y = ((lr_vf32){0}) + 1.9875691500e-4f;
    y = y * z + 1.3981999507e-3f;
    y = y * z + 8.3334519073e-3f;
    y = y * z + 4.1665795894e-2f;
    y = y * z + 1.6666665459e-1f;
    y = y * z + 5.0000001201e-1f;
    y = y * z * z + z + 1.0f;
    const lr_vi32 e = (__builtin_convertvector(fx, lr_vi32) + 127) << 23;
    return y * (lr_vf32)e;
}

static inline lr_vf64 lr_vexpd(lr_vf64 x) {
    lr_vf64 r;
    for (int i = 0; i < 16; ++i) r[i] = exp(x[i]);
    return r;
}
"""

_APPEARANCE = {None: 0, "sqdiff": 1, "absdiff": 2, "dot": 3}
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_failed: str | None = None


def source() -> str:
    """The C source compiled for float and double."""
    csrc = Path(__file__).parent / "csrc"
    tmpl = (csrc / "lr_cpu_planes.c").read_text() + (csrc / "lr_cpu.c").read_text()
    subs = {"f32": {"scalar_t": "float", "vec_t": "lr_vf32", "mask_t": "lr_vi32", "VEXP(": "lr_vexpf(",
                    "LOG(": "logf("},
            "f64": {"scalar_t": "double", "vec_t": "lr_vf64", "mask_t": "lr_vi64", "VEXP(": "lr_vexpd(",
                    "LOG(": "log("}}
    out = []
    for suf, table in subs.items():
        text = tmpl.replace("SUFFIX", suf)
        for old, new in table.items():
            text = text.replace(old, new)
        out.append(text)
    f32, f64 = out
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
        base = [cc, "-O3", "-std=gnu11", "-fPIC", "-shared", "-fno-math-errno", "-Wno-psabi", str(cfile), "-o"]
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
                getattr(lib, f"lr_forward_{suf}").argtypes = [vp] * 8 + [ci] * 13
                getattr(lib, f"lr_forward_{suf}").restype = ci
                getattr(lib, f"lr_backward_{suf}").argtypes = [vp] * 15 + [ci] * 13
                getattr(lib, f"lr_backward_{suf}").restype = ci
            _lib = lib
        except (OSError, RuntimeError) as exc:
            _failed = str(exc)
            log.warning("LR CPU kernel unavailable (%s); using the eager shift implementation.", exc)
        return _lib


def available(device: torch.device | None = None) -> bool:
    """True when the kernel is compiled (or compiles now) and `device` is the CPU."""
    return (device is None or torch.device(device).type == "cpu") and _load() is not None


# Target length (pixels, junk columns included) of one block of output rows: the per-block buffers of a
# thread (about 2 + 3m block-sized arrays) then stay in L1/L2 (measured on the development CPU, see
# reports/benchmarks.md).
BLOCK = 512


def _ptr(t: Tensor | None) -> int | None:
    return t.data_ptr() if t is not None else None


def _longs(vals) -> ctypes.Array:
    vals = [int(v) for v in vals] + [0] * (4 - len(vals))
    return (ctypes.c_long * 4)(*vals)


def _plane_rows_contiguous(t: Tensor) -> Tensor:
    """`t` itself when its (H, W) planes are row-major contiguous (what the kernel reads), else a copy."""
    w = t.shape[-1]
    return t if t.stride(-1) == 1 and (t.stride(-2) == w or t.shape[-2] == 1) else t.contiguous()


def _views(q: Tensor | None, key: Tensor | None, g: int, s: int) -> tuple:
    """(q tensor, q pointer, q strides (n, g, i, j), key pointer, key strides (n, g)); `key is None` with a
    q means the fused (N, 2G, H, W) key/query tensor (queries in channels :G on the stride-s grid)."""
    if q is None:
        return None, None, _longs(()), None, _longs(())
    if key is None:
        q = _plane_rows_contiguous(q)
        st = q.stride()
        return q, q.data_ptr(), _longs((st[0], st[1], s * st[2], s * st[3])), \
            q.data_ptr() + g * st[1] * q.element_size(), _longs(st[:2])
    key = _plane_rows_contiguous(key)
    return q, q.data_ptr(), _longs(q.stride()), key.data_ptr(), _longs(key.stride()[:2])


def _threads(tasks: int) -> int:
    return max(1, min(torch.get_num_threads(), tasks))


class _LocalRelationCPU(torch.autograd.Function):
    """(x, q, key, geo) -> out; with key=None, q is the fused key/query tensor (see `_views`)."""

    @staticmethod
    def forward(ctx, x: Tensor, q: Tensor | None, key: Tensor | None, geo: Tensor | None, k: int, stride: int,
                appearance: str | None, border: str, g: int) -> Tensor:
        lib = _load()
        x = x.contiguous()
        geo = geo.contiguous() if geo is not None else None
        n, c, h, w = x.shape
        ho, wo = lr_ops.output_size(h, w, stride)
        q, qp, qs, kp, ks = _views(q, key, g, stride)
        key = _plane_rows_contiguous(key) if key is not None else None
        out = x.new_empty(n, c, ho, wo)
        lse = x.new_empty(n, g, ho, wo)
        suf = "f32" if x.dtype == torch.float32 else "f64"
        rc = getattr(lib, f"lr_forward_{suf}")(
            _ptr(x), qp, kp, _ptr(geo), _ptr(out), _ptr(lse), qs, ks, n, c, g, h, w, ho, wo, k, stride,
            _APPEARANCE[appearance], int(border == "mask"), BLOCK, _threads(n * g))
        if rc:
            raise MemoryError("the LR CPU kernel could not allocate its work buffers")
        keep_out = any(ctx.needs_input_grad[1:4])  # D = sum dout * out is needed for the logit gradients
        ctx.save_for_backward(x, q, key, geo, out if keep_out else None, lse)
        ctx.cfg = (k, stride, appearance, border, g)
        return out

    @staticmethod
    def backward(ctx, dout: Tensor):
        lib = _load()
        x, q, key, geo, out, lse = ctx.saved_tensors
        k, s, appearance, border, g = ctx.cfg
        need_x, need_q, need_key, need_geo = ctx.needs_input_grad[:4]
        fused = q is not None and key is None
        n, c, h, w = x.shape
        ho, wo = lse.shape[-2:]
        dout = dout.contiguous()
        _, qp, qs, kp, ks = _views(q, key, g, s)
        dx = torch.empty_like(x) if need_x else None
        dq = dkey = None
        dqp = dkp = None
        dqs = dks = _longs(())
        if fused and need_q:
            dq = torch.empty(q.shape, dtype=q.dtype)  # (N, 2G, H, W): queries then keys
            if s > 1:
                dq[:, :g].zero_()  # entries off the query grid
            _, dqp, dqs, dkp, dks = _views(dq, None, g, s)
        else:
            if need_q and q is not None:
                dq = torch.empty(q.shape, dtype=q.dtype)
                dqp, dqs = dq.data_ptr(), _longs(dq.stride())
            if need_key and key is not None:
                dkey = torch.empty(key.shape, dtype=key.dtype)
                dkp, dks = dkey.data_ptr(), _longs(dkey.stride()[:2])
        dgeo_part = x.new_empty(n, g, k * k) if (need_geo and geo is not None) else None
        suf = "f32" if x.dtype == torch.float32 else "f64"
        rc = getattr(lib, f"lr_backward_{suf}")(
            _ptr(x), qp, kp, _ptr(geo), _ptr(out), _ptr(lse), _ptr(dout), _ptr(dx), dqp, dkp, _ptr(dgeo_part),
            qs, ks, dqs, dks, n, c, g, h, w, ho, wo, k, s, _APPEARANCE[appearance], int(border == "mask"), BLOCK,
            _threads(n * g))
        if rc:
            raise MemoryError("the LR CPU kernel could not allocate its work buffers")
        dgeo = dgeo_part.sum(0) if dgeo_part is not None else None
        return dx, dq, dkey, dgeo, None, None, None, None, None


MAX_KERNEL_SIZE = 31  # the kernel's per-block cell table holds k * k <= 1024 cells (LR_MAXK2)


def _usable(x: Tensor, key: Tensor | None, geo: Tensor | None, k: int) -> bool:
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and (key is not None or geo is not None) and k <= MAX_KERNEL_SIZE and _load() is not None)


def _cpu_impl(x: Tensor, q: Tensor | None, key: Tensor | None, geo: Tensor | None, *, kernel_size: int, stride: int,
              appearance: str | None, border: str, groups: int) -> Tensor:
    if not _usable(x, key, geo, kernel_size):
        return lr_ops.IMPLS["shift"](x, q, key, geo, kernel_size=kernel_size, stride=stride, appearance=appearance,
                                     border=border, groups=groups)
    if appearance is None:
        q = key = None
    return _LocalRelationCPU.apply(x, q, key, geo, kernel_size, stride, appearance, border, groups)


def fused_available(x: Tensor, kernel_size: int) -> bool:
    """True when `local_relation_fused` runs the kernel for this input (CPU, fp32/fp64, k <= 31, compiled)."""
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and kernel_size <= MAX_KERNEL_SIZE
            and _load() is not None)


def local_relation_fused(x: Tensor, qk: Tensor, geo: Tensor | None, *, kernel_size: int, stride: int,
                         appearance: str, border: str, groups: int) -> Tensor:
    """`lr_ops.local_relation` with the queries and keys in one (N, 2G, H, W) tensor: queries in channels
    :G on the full grid (read at the stride-s positions), keys in G:. The gradient comes back as one
    tensor, so the fused key/query projection needs no slicing. Requires `fused_available(x)`."""
    return _LocalRelationCPU.apply(x, qk, None, geo, kernel_size, stride, appearance, border, groups)


lr_ops.IMPLS["cpu"] = _cpu_impl
lr_ops.AVAILABLE["cpu"] = available
lr_ops.AUTO_ORDER["cpu"] = ("cpu", "shift")
