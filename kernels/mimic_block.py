"""One mimicking block in one kernel: y = act(LayerNorm(x W1^T + b1)) W2^T + b2 (+ x).

Each program owns BLOCK_M frames (rows of the (M, D) input). It walks the D input features in
BLOCK_K steps to accumulate the (BLOCK_M, h) hidden activations of the first GEMM in registers,
adds the bias, normalizes each row over h (LayerNorm with its affine), applies the activation,
and then walks the D outputs in BLOCK_N steps: second GEMM against W2, bias, the residual (the
same input rows, re-read chunk by chunk) and the store. The input is read once (twice with the
residual, the second time from cache), the output written once, and the hidden activations never
leave the chip. With a temporal context the caller computes the first GEMM and the depthwise
convolution (they need neighbouring frames) and the kernel starts from those hidden activations
(FROM_HIDDEN), doing LayerNorm, activation, second GEMM, bias and residual in the same pass.

Arithmetic: accumulators and the LayerNorm statistics are float32 (float64 for float64 inputs).
Dot operands: float32 inputs as 3xTF32 ("highest", exact float32 under the interpreter), TF32
("high") or bf16 ("medium"), as in fastsim.kernels.precision; float16/bfloat16 inputs use their
own dtype for both GEMMs (the LayerNorm output is rounded to it before the second GEMM, as the
module's is). The result has the input's dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .config import LaunchConfig, make_config, unique
from .precision import INPUT_DTYPES, PTR_NAME, TL_DTYPE, interpreting

ACT_CODES = {"relu": 0, "gelu": 1, "silu": 2, "tanh": 3}


@triton.jit
def _operand(x, OP: tl.constexpr, ACC: tl.constexpr, EMULATE: tl.constexpr):
    """x rounded to the operand dtype; back in ACC when the interpreter emulates half dots."""
    x = x.to(OP)
    if EMULATE:
        x = x.to(ACC)
    return x


@triton.jit
def _dot(a, b, acc, DOT_F32: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr):
    if DOT_F32:
        return tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=ACC)
    return tl.dot(a, b, acc, out_dtype=ACC)


@triton.jit
def mimic_block_kernel(
    x_ptr, u_ptr, w1_ptr, b1_ptr, g_ptr, beta_ptr, w2_ptr, b2_ptr, y_ptr,
    M, D, H, stride_x, stride_u, stride_y, eps,
    ACT: tl.constexpr, RESIDUAL: tl.constexpr, FROM_HIDDEN: tl.constexpr,
    ACC: tl.constexpr, OP: tl.constexpr, EMULATE: tl.constexpr, DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = (pid * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)  # 64-bit: M * stride may pass 2^31
    row_ok = rows < M
    hc = tl.arange(0, BLOCK_H)
    h_ok = hc < H

    # ---- first GEMM (or the caller's hidden activations) -------------------------------------
    if FROM_HIDDEN:
        u = tl.load(u_ptr + rows[:, None] * stride_u + hc[None, :], mask=row_ok[:, None] & h_ok[None, :], other=0.0).to(ACC)
    else:
        u = tl.zeros([BLOCK_M, BLOCK_H], dtype=ACC)
        for k0 in range(0, D, BLOCK_K):
            kc = k0 + tl.arange(0, BLOCK_K)
            k_ok = kc < D
            xk = tl.load(x_ptr + rows[:, None] * stride_x + kc[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            # W1 is (H, D) row-major; its (BLOCK_K, BLOCK_H) transposed tile
            wk = tl.load(w1_ptr + hc[None, :].to(tl.int64) * D + kc[:, None], mask=k_ok[:, None] & h_ok[None, :], other=0.0)
            u = _dot(_operand(xk, OP, ACC, EMULATE), _operand(wk, OP, ACC, EMULATE), u, DOT_F32, PRECISION, ACC)
        u += tl.load(b1_ptr + hc, mask=h_ok, other=0.0).to(ACC)[None, :]

    # ---- LayerNorm over the h hidden units, then the activation --------------------------------
    mean = tl.sum(tl.where(h_ok[None, :], u, 0.0), axis=1) / H
    diff = tl.where(h_ok[None, :], u - mean[:, None], 0.0)
    var = tl.sum(diff * diff, axis=1) / H
    z = diff * (1.0 / tl.sqrt(var + eps))[:, None]
    z = z * tl.load(g_ptr + hc, mask=h_ok, other=0.0).to(ACC)[None, :] + tl.load(beta_ptr + hc, mask=h_ok, other=0.0).to(ACC)[None, :]
    if ACT == 0:
        z = tl.maximum(z, 0.0)
    elif ACT == 1:
        z = 0.5 * z * (1.0 + tl.erf(z * 0.7071067811865476))
    elif ACT == 2:
        z = z / (1.0 + tl.exp(-z))
    else:
        z = 2.0 / (1.0 + tl.exp(-2.0 * z)) - 1.0
    z = _operand(tl.where(h_ok[None, :], z, 0.0), OP, ACC, EMULATE)

    # ---- second GEMM, bias, residual, store, BLOCK_N outputs at a time --------------------------
    for n0 in range(0, D, BLOCK_N):
        nc = n0 + tl.arange(0, BLOCK_N)
        n_ok = nc < D
        # W2 is (D, H) row-major; its (BLOCK_H, BLOCK_N) transposed tile
        w2 = tl.load(w2_ptr + nc[None, :].to(tl.int64) * H + hc[:, None], mask=h_ok[:, None] & n_ok[None, :], other=0.0)
        y = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
        y = _dot(z, _operand(w2, OP, ACC, EMULATE), y, DOT_F32, PRECISION, ACC)
        y += tl.load(b2_ptr + nc, mask=n_ok, other=0.0).to(ACC)[None, :]
        out_mask = row_ok[:, None] & n_ok[None, :]
        if RESIDUAL:
            y += tl.load(x_ptr + rows[:, None] * stride_x + nc[None, :], mask=out_mask, other=0.0).to(ACC)
        tl.store(y_ptr + rows[:, None] * stride_y + nc[None, :], y.to(y_ptr.dtype.element_ty), mask=out_mask)


def _settings(dtype: torch.dtype, precision: str, interpret: bool) -> dict:
    if precision not in ("highest", "high", "medium"):
        raise ValueError(f"precision must be 'highest', 'high' or 'medium'; got {precision!r}")
    if dtype == torch.float64:
        return dict(ACC=tl.float64, OP=tl.float64, EMULATE=False, DOT_F32=False, PRECISION="ieee")
    if dtype in (torch.float16, torch.bfloat16):
        return dict(ACC=tl.float32, OP=TL_DTYPE[dtype], EMULATE=interpret, DOT_F32=interpret, PRECISION="ieee")
    if precision == "medium":
        return dict(ACC=tl.float32, OP=tl.bfloat16, EMULATE=interpret, DOT_F32=interpret, PRECISION="ieee")
    mode = "ieee" if interpret else {"highest": "tf32x3", "high": "tf32"}[precision]
    return dict(ACC=tl.float32, OP=tl.float32, EMULATE=False, DOT_F32=True, PRECISION=mode)


#: the widest hidden layer the kernel takes: the (BLOCK_M, h) tile lives in registers and the
#: (h, BLOCK_N) W2 tile in shared memory, so wider blocks use the module ops (fused=False).
MAX_WIDTH = 256


def tiles(dtype: torch.dtype, width: int, precision: str = "highest", *, interpret: bool = False) -> dict:
    """Tile sizes and pipeline depth for a block of this width and input dtype.

    On a GPU the tiles shrink as a hidden row (h elements of the dot operands) grows, so that
    shared memory stays under ~70 KB at every width up to MAX_WIDTH and every dtype: below the
    99 KB a block may use on sm_86/sm_89 (consumer Ampere/Ada) as well as the 163/227 KB of the
    A100/H100. (Fixed 32 x 64 tiles needed 104 KB at h = 128 and 136 KB at h = 256 in float32,
    and 168 KB at h = 128 in float64: out of resources on those GPUs.) At 512-byte rows, float32
    "highest" (3xTF32: each operand in two halves) takes 16-row tiles and float64 two stages,
    which keep them from spilling (32 rows spilled ~160 bytes per thread, 3 float64 stages 8);
    rows up to 256 bytes take 32 x 32 steps, float64 in two stages (32 x 64 steps spilled 8-48
    bytes somewhere among float32 "high"/"medium" and float64 on sm_86/sm_90 with Triton 3.6/3.9).
    Under the interpreter bigger row tiles are faster (fewer programs)."""
    block_h = max(16, triton.next_power_of_2(width))
    row = torch.empty((), dtype=dtype).element_size() * block_h
    wide = dtype == torch.float64
    if row <= 256:
        block_m, block_k, block_n, stages = 32, 32, 32, 2 if wide else 3
    elif row <= 512:
        block_m = 16 if dtype == torch.float32 and precision == "highest" else 32
        block_k, block_n, stages = 32, 32, 2 if wide else 3
    elif row <= 1024:
        block_m, block_k, block_n, stages = 16, 32, 32, 2
    else:
        block_m, block_k, block_n, stages = 16, 16, 16, 2
    if interpret:
        block_m = 64
    return dict(BLOCK_M=block_m, BLOCK_H=block_h, BLOCK_K=block_k, BLOCK_N=block_n, num_stages=stages)


def launch_config(
    dtype: torch.dtype,
    width: int,
    precision: str = "highest",
    *,
    activation: str = "relu",
    residual: bool = False,
    from_hidden: bool = False,
    aligned: bool = True,
    interpret: bool = False,
) -> LaunchConfig:
    """The configuration mimic_block launches for input of `dtype` and a hidden layer `width` wide."""
    if activation not in ACT_CODES:
        raise ValueError(f"activation must be one of {sorted(ACT_CODES)}; got {activation!r}")
    t = tiles(dtype, width, precision, interpret=interpret)
    stages = t.pop("num_stages")
    constexprs = dict(ACT=ACT_CODES[activation], RESIDUAL=bool(residual), FROM_HIDDEN=bool(from_hidden),
                      **_settings(dtype, precision, interpret), **t)
    ptr = PTR_NAME[dtype]
    runtime = {k: ptr for k in ("x_ptr", "u_ptr", "w1_ptr", "b1_ptr", "g_ptr", "beta_ptr", "w2_ptr", "b2_ptr", "y_ptr")}
    runtime.update(M="i32", D="i32", H="i32", stride_x="i32", stride_u="i32", stride_y="i32", eps="fp32")
    prec = precision if dtype == torch.float32 else "-"
    label = f"{str(dtype).replace('torch.', '')} {prec} h<={t['BLOCK_H']}{' hidden' if from_hidden else ''}"
    return make_config(mimic_block_kernel, runtime, constexprs, num_warps=4, num_stages=stages, aligned=aligned, label=label)


def configs(exhaustive: bool = True) -> list[LaunchConfig]:
    """Every tile configuration mimic_block can launch on a GPU: each hidden-width bucket (16 ..
    MAX_WIDTH) x input dtype x precision (float32 only; the others ignore it) x with or without
    the caller's hidden activations, with GELU and the residual (the activation and the residual
    change only elementwise code, not the tiles). exhaustive=False: float32 "highest" at 128 and
    256, "high" at 128, float64 at 64 and 256, bfloat16 at 256, without FROM_HIDDEN."""
    out = []
    for dtype in INPUT_DTYPES:
        for precision in (("highest", "high", "medium") if dtype == torch.float32 else ("highest",)):
            for width in (16, 32, 64, 128, 256):
                for from_hidden in (False, True):
                    if not exhaustive:
                        keep = not from_hidden and (dtype, precision, width) in (
                            (torch.float32, "highest", 128), (torch.float32, "highest", 256), (torch.float32, "high", 128),
                            (torch.float64, "highest", 64), (torch.float64, "highest", 256), (torch.bfloat16, "highest", 256))
                        if not keep:
                            continue
                    out.append(launch_config(dtype, width, precision, activation="gelu", residual=True, from_hidden=from_hidden))
    return unique(out)


def mimic_block(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    *,
    eps: float = 1e-5,
    activation: str = "relu",
    residual: bool = False,
    hidden: torch.Tensor | None = None,
    precision: str = "highest",
) -> torch.Tensor:
    """The fused block on x (M, D) with W1 (h, D), b1 (h,), LayerNorm gamma/beta (h,), W2 (D, h),
    b2 (D,) (nn.Linear layouts). hidden: the (M, h) first-GEMM output to start from instead of
    x W1^T + b1 (the temporal-context path; w1 and b1 are then unused). Returns (M, D) in x's dtype."""
    if activation not in ACT_CODES:
        raise ValueError(f"activation must be one of {sorted(ACT_CODES)}; got {activation!r}")
    if x.dim() != 2:
        raise ValueError(f"x must be (M, D); got {tuple(x.shape)}")
    M, D = x.shape
    H = w1.shape[0]
    if H > MAX_WIDTH:
        raise ValueError(f"width: the fused kernel takes blocks up to {MAX_WIDTH} wide; got {H} (use fused=False)")
    if w1.shape != (H, D) or w2.shape != (D, H) or b1.shape != (H,) or b2.shape != (D,) or gamma.shape != (H,) or beta.shape != (H,):
        raise ValueError(f"weights do not fit a block of width {H} on {D} features")
    if x.dtype not in TL_DTYPE:
        raise TypeError(f"x must be float16, bfloat16, float32 or float64; got {x.dtype}")
    x = x if x.stride(1) == 1 else x.contiguous()
    w1, b1, gamma, beta, w2, b2 = (t.contiguous() for t in (w1, b1, gamma, beta, w2, b2))
    if hidden is not None:
        if hidden.shape != (M, H):
            raise ValueError(f"hidden must be ({M}, {H}); got {tuple(hidden.shape)}")
        hidden = hidden if hidden.stride(1) == 1 else hidden.contiguous()
    y = torch.empty((M, D), dtype=x.dtype, device=x.device)
    if M == 0:
        return y
    cfg = launch_config(x.dtype, H, precision, activation=activation, residual=residual, from_hidden=hidden is not None,
                        interpret=interpreting())
    grid = (triton.cdiv(M, cfg["BLOCK_M"]),)
    u = hidden if hidden is not None else x
    mimic_block_kernel[grid](
        x, u, w1, b1, gamma, beta, w2, b2, y,
        M, D, H, x.stride(0), u.stride(0), y.stride(0), float(eps),
        **cfg.launch_args(),
    )
    return y
