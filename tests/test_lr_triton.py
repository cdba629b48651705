"""Triton LR kernel (impl="triton") against the unfold reference.

(a) CPU: Triton's interpreter (TRITON_INTERPRET=1, which must be set before triton is imported, hence
    subprocesses) runs the kernels on CPU tensors at tiny shapes (N=1-2, C=8, G=2, 7x6): in fp32 every
    appearance x border x stride {1,2} x geo on/off at k=3 and every appearance x border at k=5 and k=1; in
    fp64 every appearance x border at k=3; plus multi-tile grids with a non-power-of-two group width,
    stride 3, large logits, channels_last input, m=1, bf16, and the gradient subsets (an input-gradient
    pass launches no dgeo work; an x-only pass skips kernel A). Two worker processes share the cases;
    the interpreter costs about 0.3-3 s per case. Every case checks that the Triton kernels really ran.
    Tolerances, as max |err| / max(1, max |ref|) against the fp64 reference on the same (rounded) inputs:
        fp64 1e-11, fp32 1e-5, bf16 3e-2 (the interpreter truncates fp32 -> bf16 stores instead of rounding
        to nearest, so up to 1 ulp = 2^-7 relative, and D = sum dout*out is formed from the bf16 output).
    Also on CPU: the kernels compiled offline for sm_90 (Triton's NVIDIA backend + ptxas, no GPU needed),
    asserting no register spills; and the CPU fallback to the shift path outside interpreter mode.
(b) GPU (`@pytest.mark.gpu`, skipped without CUDA): fp32 at N=8, C=64, 32x32, k=7 (and k in {3,5,7,9},
    stride 2) within 1e-4, bf16 within 3e-2 (same normalisation; bf16 output rounding is 2^-9 relative,
    and an fp64 emulation of the bf16 D term gives up to 1.1% of max |dq| at this shape), fp64, the
    input-gradient subset, and impl="auto" resolving to "triton" on CUDA.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

TOL = {"float64": 1e-11, "float32": 1e-5, "bfloat16": 3e-2}
GPU_TOL = {"float64": 1e-11, "float32": 1e-4, "bfloat16": 3e-2}
WORKERS = 2


def _case(app, border, k, s, geo, dtype="float32", n=1, c=8, g=2, h=7, w=6, **extra) -> dict:
    name = f"{app}-{border}-k{k}-s{s}-{'geo' if geo else 'nogeo'}-{dtype}-{n}x{c}x{h}x{w}/g{g}"
    for key, val in extra.items():
        name += f"-{key}={val}"
    return dict(name=name, app=app, border=border, k=k, s=s, geo=geo, dtype=dtype, n=n, c=c, g=g, h=h, w=w, **extra)


def cpu_cases() -> list[dict]:
    apps, borders = ["sqdiff", "absdiff", "dot", None], ["mask", "zeros"]
    cases = []
    # fp32: the full appearance x border x stride x geo matrix at k=3 (appearance None needs geo) ...
    for app, border, s, geo in itertools.product(apps, borders, [1, 2], [True, False]):
        if app is not None or geo:
            cases.append(_case(app, border, 3, s, geo, "float32"))
    # ... and every appearance x border at k=5 and k=1, alternating stride and geo
    for idx, (app, border) in enumerate(itertools.product(apps, borders)):
        cases.append(_case(app, border, 5, 1 + idx % 2, app is None or idx % 4 < 2, "float32"))
        cases.append(_case(app, border, 1, 2 - idx % 2, True, "float32"))
    # fp64 (N=2): every appearance x border at k=3, with geo, alternating stride
    for idx, (app, border) in enumerate(itertools.product(apps, borders)):
        cases.append(_case(app, border, 3, 1 + idx % 2, True, "float64", n=2, h=5, w=6))
    cases += [
        # several tiles per image (forced 2x4 tiles, edge tiles), group width m = 6 padded to 8
        _case("sqdiff", "zeros", 3, 1, True, "float64", c=6, g=1, h=5, w=6, tile=(2, 4)),
        _case("absdiff", "mask", 3, 2, False, "float64", c=6, g=1, h=6, w=9, tile=(2, 4)),
        _case("dot", "zeros", 5, 3, True, "float64", h=8, w=7),  # stride 3
        _case("sqdiff", "mask", 5, 1, True, "float32", scale=6.0),  # logits down to about -300
        _case("sqdiff", "zeros", 3, 1, True, "float32", layout="channels_last"),
        _case("dot", "mask", 3, 1, True, "float32", c=2, g=2),  # m = 1
        _case("sqdiff", "mask", 3, 1, True, "float32", grads="input"),  # geo frozen: no dgeo work
        _case("sqdiff", "zeros", 3, 2, True, "float32", grads="x"),  # only dx: kernel A is skipped
        _case("sqdiff", "mask", 3, 1, True, "bfloat16"),
        _case(None, "zeros", 3, 2, True, "bfloat16"),
    ]
    return cases


class _Spy:
    """Records the flags of each launch of a Triton kernel (kernel[grid](...))."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __getitem__(self, grid):
        launch = self.fn[grid]

        def call(*args, **kwargs):
            self.calls.append({k: bool(v) for k, v in kwargs.items() if k.startswith("NEED") or k == "STORE_D"})
            return launch(*args, **kwargs)

        return call


def run_case(case: dict, device: str = "cpu") -> dict:
    """Forward and the requested gradients of impl='triton' against the fp64 unfold reference."""
    from robustbench_lr.layers import lr_ops, lr_triton

    n, c, g, h, w, k, s = (case[key] for key in ("n", "c", "g", "h", "w", "k", "s"))
    app, dtype = case["app"], getattr(torch, case["dtype"])
    ho, wo = lr_ops.output_size(h, w, s)
    gen = torch.Generator().manual_seed(1234)
    scale = case.get("scale", 1.0)
    base = {"x": torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)}
    if app:
        base["q"] = scale * torch.randn(n, g, ho, wo, generator=gen, dtype=torch.float64)
        base["key"] = scale * torch.randn(n, g, h, w, generator=gen, dtype=torch.float64)
    if case["geo"]:
        base["geo"] = torch.randn(g, k * k, generator=gen, dtype=torch.float64)
    gy = torch.randn(n, c, ho, wo, generator=gen, dtype=torch.float64)
    # round to the tested dtype first, so that the reference sees exactly the kernel's inputs
    base = {key: t.to(dtype).to(torch.float64) for key, t in base.items()}
    gy = gy.to(dtype).to(torch.float64)
    grads = case.get("grads", "all")
    needs = {"all": set(base), "input": {"x", "q", "key"}, "x": {"x"}}[grads] & set(base)

    def leaves(dt: torch.dtype) -> dict:
        out = {}
        for key, t in base.items():
            t = t.to(device=device, dtype=dt)
            if key == "x" and case.get("layout") == "channels_last":
                t = t.contiguous(memory_format=torch.channels_last)
            out[key] = t.requires_grad_(key in needs)
        return out

    kw = dict(kernel_size=k, stride=s, appearance=app, border=case["border"], groups=g)
    ref_in, new_in = leaves(torch.float64), leaves(dtype)
    y_ref = lr_ops.local_relation_reference(ref_in["x"], ref_in.get("q"), ref_in.get("key"), ref_in.get("geo"), **kw)
    spies, saved = {}, {}
    for name in ("_lr_fwd_kernel", "_lr_bwd_out_kernel", "_lr_bwd_in_kernel"):  # record every launch
        saved[name] = getattr(lr_triton, name)
        spies[name] = _Spy(saved[name])
        setattr(lr_triton, name, spies[name])
    try:
        y = lr_ops.local_relation(new_in["x"], new_in.get("q"), new_in.get("key"), new_in.get("geo"), impl="triton",
                                  **kw)
        order = [key for key in ("x", "q", "key", "geo") if key in needs]
        g_ref = torch.autograd.grad(y_ref, [ref_in[key] for key in order], gy.to(device))
        g_new = torch.autograd.grad(y, [new_in[key] for key in order], gy.to(device=device, dtype=dtype))
    finally:
        for name, fn in saved.items():
            setattr(lr_triton, name, fn)
    res = {"name": case["name"], "dtype": case["dtype"], "err": {}, "ref_max": {}}
    for key, a, b in zip(["out", *("d" + key for key in order)], [y, *g_new], [y_ref, *g_ref]):
        assert a.dtype == dtype and a.shape == b.shape, (key, a.dtype, a.shape, b.shape)
        res["err"][key] = (a.double() - b).abs().max().item()
        res["ref_max"][key] = b.abs().max().item()
    res["spy"] = {name: spy.calls for name, spy in spies.items()}
    return res


def _worker(index: int, count: int) -> None:
    os.environ["TRITON_INTERPRET"] = "1"
    torch.set_num_threads(1)
    from robustbench_lr.layers import lr_triton

    assert lr_triton.HAS_TRITON and lr_triton._INTERPRET, "interpreter mode was not picked up"
    for case in cpu_cases()[index::count]:
        t0 = time.perf_counter()
        lr_triton._TILE_OVERRIDE = tuple(case["tile"]) if "tile" in case else None
        try:
            res = run_case(case)
        except Exception as exc:  # report, keep going
            res = {"name": case["name"], "error": f"{type(exc).__name__}: {exc}"}
        res["secs"] = time.perf_counter() - t0
        print("RESULT " + json.dumps(res), flush=True)


def _check(res: dict, tol: dict) -> list[str]:
    bad = []
    if "error" in res:
        return [f"{res['name']}: {res['error']}"]
    t = tol[res["dtype"]]
    for key, err in res["err"].items():
        if not err <= t * max(1.0, res["ref_max"][key]):
            bad.append(f"{res['name']}: {key} max err {err:.3g} (ref max {res['ref_max'][key]:.3g}, tol {t:g})")
    return bad


# --------------------------------------------------------------------------------------------------
# (a) CPU, in the Triton interpreter
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_interpreter_matches_reference():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", str(i), str(WORKERS)],
                              cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(WORKERS)]
    results, stderr = [], []
    for p in procs:
        out, err = p.communicate(timeout=600)
        results += [json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")]
        if p.returncode:
            stderr.append(err[-3000:])
    wall = time.perf_counter() - t0
    assert not stderr, "worker failed:\n" + "\n".join(stderr)
    names = {r["name"] for r in results}
    missing = [cs["name"] for cs in cpu_cases() if cs["name"] not in names]
    assert not missing, f"cases without a result: {missing}"
    print(f"\n{len(results)} interpreter cases in {wall:.1f} s wall")
    for r in results:
        if "err" in r:
            errs = " ".join(f"{k}={v:.1e}" for k, v in r["err"].items())
            print(f"  {r['name']:<58} {errs}  ({r['secs']:.1f} s)")
    bad = [msg for r in results for msg in _check(r, TOL)]
    assert not bad, "\n".join(bad)
    spy = {r["name"]: r["spy"] for r in results}
    for name, calls in spy.items():
        assert len(calls["_lr_fwd_kernel"]) == 1, f"{name}: the Triton forward did not run (fallback?)"
        assert len(calls["_lr_bwd_in_kernel"]) == 1, f"{name}: kernel B did not run"
        a, b = calls["_lr_bwd_out_kernel"], calls["_lr_bwd_in_kernel"]
        if "grads=input" in name:  # dq and dkey need kernel A, but no dgeo partial sums
            assert len(a) == 1 and a[0]["NEED_DQ"] and a[0]["STORE_D"] and not a[0]["NEED_DGEO"], a
            assert len(b) == 1 and b[0]["NEED_DX"] and b[0]["NEED_DK"], b
        elif "grads=x" in name:
            assert a == [] and len(b) == 1 and b[0]["NEED_DX"] and not b[0]["NEED_DK"], (a, b)
        else:  # all gradients: kernel A stores D (for dkey) and computes dq and dgeo as applicable
            assert len(a) == 1 and a[0]["STORE_D"] == ("-None-" not in f"-{name}"), (name, a)


def test_cpu_without_interpreter_falls_back_to_shift():
    """Outside interpreter mode, CPU tensors take the shift path (same values, no Triton launch)."""
    from robustbench_lr.layers import lr_ops, lr_triton

    if lr_triton._INTERPRET:
        pytest.skip("this process runs in interpreter mode")
    x = torch.randn(1, 8, 5, 6, dtype=torch.float64)
    q, key = torch.randn(1, 2, 5, 6, dtype=torch.float64), torch.randn(1, 2, 5, 6, dtype=torch.float64)
    geo = torch.randn(2, 9, dtype=torch.float64)
    kw = dict(kernel_size=3, stride=1, appearance="sqdiff", border="mask", groups=2)
    assert not lr_triton.supported(x, q, key, geo, **kw)
    y = lr_ops.local_relation(x, q, key, geo, impl="triton", **kw)
    assert torch.allclose(y, lr_ops.local_relation_reference(x, q, key, geo, **kw), atol=1e-12)
    assert not lr_ops.AVAILABLE.get("triton", lambda d: False)(torch.device("cpu"))


def _compile_offline(fn, dt: str, consts: dict, num_warps: int, arch: int = 90) -> dict:
    """Compile a kernel for sm_`arch` without a GPU (Triton's NVIDIA backend and ptxas); resource usage."""
    import shutil

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from robustbench_lr.layers import lr_triton as lt

    lse_t = "*fp64" if dt == "fp64" else "*fp32"
    ptr = {"lse_ptr": lse_t, "d_ptr": lse_t, "dgeo_part_ptr": lse_t}
    sig = {a: "constexpr" if a in consts else (ptr.get(a, f"*{dt}") if a.endswith("_ptr") else "i32")
           for a in fn.arg_names}
    kernel = triton.compile(ASTSource(fn, sig, constexprs=consts), target=GPUTarget("cuda", arch, 32),
                            options=dict(num_warps=num_warps, enable_fp_fusion=lt.FP_FUSION))
    usage = {}
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if cuobjdump.is_file() or shutil.which("cuobjdump"):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            cubin = Path(tmp) / "k.cubin"
            cubin.write_bytes(kernel.asm["cubin"])
            text = subprocess.run([str(cuobjdump) if cuobjdump.is_file() else "cuobjdump", "--dump-resource-usage",
                                   str(cubin)], capture_output=True, text=True).stdout
        for line in text.splitlines():
            if "REG:" in line:
                usage = {kv.split(":")[0]: int(kv.split(":")[1]) for kv in line.split() if kv.count(":") == 1
                         and kv.split(":")[1].isdigit()}
    return usage


@pytest.mark.slow
def test_offline_compile_sm90():
    """Real compilation (Triton frontend, LLVM, ptxas) for H100 without a GPU: catches what the interpreter
    tolerates (constexpr control flow, loop-carried values, scalar stores) and reports register spills."""
    triton = pytest.importorskip("triton")
    from robustbench_lr.layers import lr_triton as lt

    if lt._INTERPRET:
        pytest.skip("interpreter mode: kernels are not compilable objects")
    try:
        from triton.backends import backends

        if "nvidia" not in backends or not (Path(triton.__file__).parent / "backends/nvidia/bin/ptxas").is_file():
            pytest.skip("Triton's NVIDIA backend / ptxas is not installed")
    except ImportError:
        pytest.skip("Triton backend registry unavailable")
    import triton.language as tl

    configs = [  # (dtype, k, m, appearance code, mask, geo, stride)
        ("fp32", 7, 8, 1, True, True, 1),
        ("bf16", 9, 6, 2, False, True, 2),
    ]
    report = []
    for dt, k, m, app, mask, geo, s in configs:
        mp = lt._next_pow2(m)
        bh, bw = lt._tile(32, 32, mp)
        nw = lt._num_warps(bh * bw, mp)
        common = dict(M=m, MP=mp, KS=k, STRIDE=s, APP=app, HAS_GEO=geo, BH=bh, BW=bw,
                      ACC=tl.float64 if dt == "fp64" else tl.float32, UNROLL=lt._unroll(k))
        for fn, extra in [(lt._lr_fwd_kernel, dict(MASK=mask)),
                          (lt._lr_bwd_out_kernel, dict(MASK=mask, NEED_DQ=app > 0, NEED_DGEO=geo, STORE_D=app > 0)),
                          (lt._lr_bwd_in_kernel, dict(NEED_DX=True, NEED_DK=app > 0))]:
            usage = _compile_offline(fn, dt, dict(common, **extra), nw)
            report.append((fn.__name__, dt, k, m, usage.get("REG"), usage.get("LOCAL")))
            assert usage.get("LOCAL", 0) == 0, f"register spills: {report[-1]}"
    print("\n".join(str(r) for r in report))


# --------------------------------------------------------------------------------------------------
# (b) GPU
# --------------------------------------------------------------------------------------------------
def _gpu_check(case: dict) -> None:
    res = run_case(case, device="cuda")
    bad = _check(res, GPU_TOL)
    assert not bad, "\n".join(bad) + f"\n{res}"


@pytest.mark.gpu
@pytest.mark.parametrize("app,border", list(itertools.product(["sqdiff", "absdiff", "dot", None], ["mask", "zeros"])))
def test_gpu_fp32_realistic(app, border):
    _gpu_check(_case(app, border, 7, 1, True, "float32", n=8, c=64, g=8, h=32, w=32))


@pytest.mark.gpu
@pytest.mark.parametrize("k,s", [(3, 1), (5, 2), (9, 1), (9, 2), (7, 2)])
@pytest.mark.parametrize("border", ["mask", "zeros"])
def test_gpu_fp32_kernel_sizes(k, s, border):
    _gpu_check(_case("sqdiff", border, k, s, True, "float32", n=4, c=64, g=8, h=17, w=23))


@pytest.mark.gpu
@pytest.mark.parametrize("border", ["mask", "zeros"])
@pytest.mark.parametrize("app", ["sqdiff", "dot"])
def test_gpu_bf16(app, border):
    _gpu_check(_case(app, border, 7, 1, True, "bfloat16", n=8, c=64, g=8, h=32, w=32))


@pytest.mark.gpu
def test_gpu_fp64_and_grad_subsets():
    _gpu_check(_case("absdiff", "zeros", 5, 2, True, "float64", n=2, c=16, g=2, h=11, w=9))
    _gpu_check(_case("sqdiff", "mask", 7, 1, True, "float32", n=8, c=64, g=8, h=32, w=32, grads="input"))


@pytest.mark.gpu
def test_gpu_auto_picks_triton():
    from robustbench_lr.layers import LocalRelation2d, lr_ops

    assert lr_ops.resolve_impl("auto", torch.device("cuda")) == "triton"
    layer = LocalRelation2d(64, 7, 8).cuda()
    x = torch.randn(2, 64, 16, 16, device="cuda")
    ref = LocalRelation2d(64, 7, 8, impl="reference").cuda()
    ref.load_state_dict(layer.state_dict())
    with torch.no_grad():  # the aggregation only: the trailing 1x1 conv may run in TF32
        assert (layer.aggregate(x) - ref.aggregate(x)).abs().max().item() < 1e-4


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        _worker(int(sys.argv[2]), int(sys.argv[3]))
    else:
        print("usage: python tests/test_lr_triton.py --worker INDEX COUNT  (run by pytest)")
