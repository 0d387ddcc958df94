#!/usr/bin/env python3
"""Pure-PyTorch reference for s6's training-step benchmarks (docs/performance.md).

Trains the Mamba-1 language model of docs/model.md section 1 (embedding, n_layer x [fused add + RMSNorm with
the residual in fp32 -> Mamba mixer], final add + RMSNorm, lm head tied to the embedding) with
torch.optim.AdamW, cross-entropy on every position and gradient clipping at 1.0, on one fixed batch of
the shapes in docs/performance.md, and times the step. No mamba_ssm, no Triton, no custom CUDA: every
op is a stock PyTorch op, so the numbers say what "plain PyTorch" costs for the same model.

Selective scan (docs/model.md section 2): a custom autograd Function, chunked along time.
  * Forward, per chunk of T steps (T = --chunk, or automatic: the largest power of two <= L with
    batch*T*d_inner*d_state <= 2^26 elements): form a_t = exp(delta_t*A) and x_t = delta_t*u_t*B_t as
    (batch, T, d_inner, d_state) fp32 tensors, fold the state carried in from the previous chunk into
    x_0, and solve h_t = a_t*h_{t-1} + x_t with an exact recursive odd/even (pairwise) parallel scan:
    log2(T) levels of whole-tensor ops, only products of decays in [0, 1] and sums, so no
    exp(-cumsum) rescaling that could overflow. y_t = sum_n C_t*h_t + D*u_t, out = y*SiLU(z).
    The (batch, L, d_inner, d_state) tensor for the whole sequence never exists; per layer the forward
    keeps only its inputs plus the state at each chunk start (batch, n_chunks, d_inner, d_state).
  * Backward (hand-derived, docs/model.md 2.3), chunks in reverse: recompute the chunk's states from the saved
    chunk-start state, run the adjoint recurrence dh_t = C_t*gy_t + a_{t+1}*dh_{t+1} with the same
    parallel scan run backwards (carrying a_{t+1}*dh_{t+1} across the chunk boundary), then form
    du, ddelta, dA, dB, dC, dD, dz and the dt-bias gradient from dh, h and a_t*h_{t-1} = h_t - x_t.
  `--check` compares it with a naive step-by-step loop (autograd through the loop) in float64 and runs
  torch.autograd.gradcheck on it; it exits with status 1 on any mismatch.

Usage (GPU):  python3 bench/torch_reference.py --config all --steps 20 --json out.json
      (CPU):  python3 bench/torch_reference.py --device cpu --smoke
              python3 bench/torch_reference.py --device cpu --check
"""

import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------------
# Selective scan
# ---------------------------------------------------------------------------------------------------


def _scan_forward(c, x, out):
    """Linear recurrence along dim 1: out[:, 0] = x[:, 0], out[:, t] = c[:, t-1]*out[:, t-1] + x[:, t].

    c has one entry fewer than x along dim 1 (c[:, t-1] couples step t-1 to step t). out may be x
    itself (then x is overwritten) or any tensor/view of x's shape. Pairwise recursion: combine the
    steps (2i, 2i+1), solve the half-length recurrence for the odd steps, then fill in the even steps.
    """
    T = x.shape[1]
    if T == 1:
        if out is not x:
            out.copy_(x)
        return
    if T % 2 == 1:
        _scan_forward(c[:, :T - 2], x[:, :T - 1], out[:, :T - 1])
        torch.addcmul(x[:, T - 1], c[:, T - 2], out[:, T - 2], out=out[:, T - 1])
        return
    xe, xo = x[:, 0::2], x[:, 1::2]
    x2 = torch.addcmul(xo, c[:, 0::2], xe)            # h_{2i+1} = x_{2i+1} + c_{2i} x_{2i} + ...
    c2 = c[:, 2::2] * c[:, 1::2]                      # pair i-1 -> pair i: c_{2i} c_{2i-1}
    if out is not x:
        out[:, 0].copy_(x[:, 0])
        _scan_forward(c2, x2, out[:, 1::2])
        if T > 2:
            torch.addcmul(x[:, 2::2], c[:, 1::2], out[:, 1:T - 2:2], out=out[:, 2::2])
    else:
        # xo has been consumed into x2, so the odd slots can take the result; even slots are
        # updated in place from themselves.
        _scan_forward(c2, x2, out[:, 1::2])
        if T > 2:
            torch.addcmul(out[:, 2::2], c[:, 1::2], out[:, 1:T - 2:2], out=out[:, 2::2])


def _scan_reverse(c, x, out):
    """Reverse recurrence along dim 1: out[:, T-1] = x[:, T-1], out[:, t] = c[:, t]*out[:, t+1] + x[:, t].

    c has one entry fewer than x (c[:, t] couples step t+1 back to step t). out may be x itself.
    """
    T = x.shape[1]
    if T == 1:
        if out is not x:
            out.copy_(x)
        return
    if T % 2 == 1:
        _scan_reverse(c[:, 1:], x[:, 1:], out[:, 1:])
        torch.addcmul(x[:, 0], c[:, 0], out[:, 1], out=out[:, 0])
        return
    xe, xo = x[:, 0::2], x[:, 1::2]
    x2 = torch.addcmul(xe, c[:, 0::2], xo)            # h_{2i} = x_{2i} + c_{2i} x_{2i+1} + ...
    c2 = c[:, 0:T - 2:2] * c[:, 1::2]                 # pair i+1 -> pair i: c_{2i} c_{2i+1}
    if out is not x:
        out[:, T - 1].copy_(x[:, T - 1])
        _scan_reverse(c2, x2, out[:, 0::2])
        if T > 2:
            torch.addcmul(x[:, 1:T - 1:2], c[:, 1::2], out[:, 2::2], out=out[:, 1:T - 1:2])
    else:
        _scan_reverse(c2, x2, out[:, 0::2])
        if T > 2:
            torch.addcmul(out[:, 1:T - 1:2], c[:, 1::2], out[:, 2::2], out=out[:, 1:T - 1:2])


def _softplus_grad(v):
    """d softplus(v)/dv with PyTorch's (and the CUDA kernel's) threshold 20."""
    return torch.where(v > 20.0, torch.ones_like(v), torch.sigmoid(v))


class SelectiveScanFn(torch.autograd.Function):
    """out = selective_scan(u, delta, A, B, C, D, z, delta_bias, softplus) in (batch, L, channels) layout.

    u, delta, z: (Bt, L, Din); B, C: (Bt, L, N); A: (Din, N) fp32; D, delta_bias: (Din,) fp32.
    All math in fp32 (float64 when the inputs are float64); output in u's dtype.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, chunk):
        dev_type = u.device.type
        with torch.autocast(device_type=dev_type, enabled=False):
            wt = torch.float64 if u.dtype == torch.float64 else torch.float32
            Bt, L, Din = u.shape
            N = A.shape[1]
            T = max(1, min(int(chunk), L))
            n_chunks = (L + T - 1) // T
            A_ = A.to(wt)
            D_ = D.to(wt)
            bias = delta_bias.to(wt)
            out = torch.empty((Bt, L, Din), dtype=u.dtype, device=u.device)
            h_starts = torch.empty((Bt, n_chunks, Din, N), dtype=wt, device=u.device)
            h = torch.zeros((Bt, Din, N), dtype=wt, device=u.device)
            for ci in range(n_chunks):
                t0, t1 = ci * T, min(L, (ci + 1) * T)
                h_starts[:, ci] = h
                u_c = u[:, t0:t1].to(wt)
                dl = F.softplus(delta[:, t0:t1].to(wt) + bias)                       # (Bt, T, Din)
                a = torch.exp(dl.unsqueeze(-1) * A_)                                   # (Bt, T, Din, N)
                x = (dl * u_c).unsqueeze(-1) * B[:, t0:t1].to(wt).unsqueeze(2)        # (Bt, T, Din, N)
                x[:, 0].addcmul_(a[:, 0], h)
                _scan_forward(a[:, 1:], x, x)                                          # x <- h_t
                y = torch.matmul(x, C[:, t0:t1].to(wt).unsqueeze(-1)).squeeze(-1)
                y.addcmul_(u_c, D_)
                z_c = z[:, t0:t1].to(wt)
                out[:, t0:t1] = y * F.silu(z_c)
                h = x[:, -1].clone()
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, h_starts)
            ctx.chunk = T
        return out

    @staticmethod
    def backward(ctx, g):
        u, delta, A, B, C, D, z, delta_bias, h_starts = ctx.saved_tensors
        T = ctx.chunk
        dev_type = u.device.type
        with torch.autocast(device_type=dev_type, enabled=False):
            wt = h_starts.dtype
            Bt, L, Din = u.shape
            N = A.shape[1]
            n_chunks = h_starts.shape[1]
            A_ = A.to(wt)
            D_ = D.to(wt)
            bias = delta_bias.to(wt)
            du = torch.empty((Bt, L, Din), dtype=wt, device=u.device)
            ddelta = torch.empty((Bt, L, Din), dtype=wt, device=u.device)
            dz = torch.empty((Bt, L, Din), dtype=wt, device=u.device)
            dB = torch.empty((Bt, L, N), dtype=wt, device=u.device)
            dC = torch.empty((Bt, L, N), dtype=wt, device=u.device)
            dA = torch.zeros((Din, N), dtype=wt, device=u.device)
            dD = torch.zeros((Din,), dtype=wt, device=u.device)
            dbias = torch.zeros((Din,), dtype=wt, device=u.device)
            carry = None                       # a_{t1} * dh_{t1}: adjoint flowing in from the next chunk
            for ci in reversed(range(n_chunks)):
                t0, t1 = ci * T, min(L, (ci + 1) * T)
                u_c = u[:, t0:t1].to(wt)
                v = delta[:, t0:t1].to(wt) + bias
                dl = F.softplus(v)
                B_c = B[:, t0:t1].to(wt)
                C_c = C[:, t0:t1].to(wt)
                z_c = z[:, t0:t1].to(wt)
                g_c = g[:, t0:t1].to(wt)
                # Recompute the chunk's states from the saved state at its start.
                a = torch.exp(dl.unsqueeze(-1) * A_)
                dlu = dl * u_c
                x = dlu.unsqueeze(-1) * B_c.unsqueeze(2)
                h = x.clone()
                h[:, 0].addcmul_(a[:, 0], h_starts[:, ci])
                _scan_forward(a[:, 1:], h, h)
                ah = x.neg_().add_(h)                                                  # a_t * h_{t-1}
                del x
                # Gate and D skip.
                y = torch.matmul(h, C_c.unsqueeze(-1)).squeeze(-1)
                y.addcmul_(u_c, D_)
                sz = torch.sigmoid(z_c)
                gy = g_c * z_c * sz
                dz[:, t0:t1] = g_c * y * sz * (1 + z_c * (1 - sz))
                dD += (gy * u_c).sum((0, 1))
                dC[:, t0:t1] = torch.matmul(h.transpose(-1, -2), gy.unsqueeze(-1)).squeeze(-1)
                del h
                # Adjoint of the state: dh_t = C_t gy_t + a_{t+1} dh_{t+1}.
                dh = gy.unsqueeze(-1) * C_c.unsqueeze(2)
                if carry is not None:
                    dh[:, -1] += carry
                _scan_reverse(a[:, 1:], dh, dh)
                carry = a[:, 0] * dh[:, 0]
                del a
                q = torch.matmul(dh, B_c.unsqueeze(-1)).squeeze(-1)                  # sum_n dh B
                du[:, t0:t1] = torch.addcmul(D_ * gy, dl, q)
                dB[:, t0:t1] = torch.matmul(dh.transpose(-1, -2), dlu.unsqueeze(-1)).squeeze(-1)
                p = dh.mul_(ah)                                                        # dh * a_t h_{t-1}
                del ah
                dA += (p * dl.unsqueeze(-1)).sum((0, 1))
                ddl = torch.addcmul((p * A_).sum(-1), u_c, q)
                dv = ddl * _softplus_grad(v)
                ddelta[:, t0:t1] = dv
                dbias += dv.sum((0, 1))
        return (du.to(u.dtype), ddelta.to(delta.dtype), dA.to(A.dtype), dB.to(B.dtype),
                dC.to(C.dtype), dD.to(D.dtype), dz.to(z.dtype), dbias.to(delta_bias.dtype), None)


def selective_scan(u, delta, A, B, C, D, z, delta_bias, chunk):
    return SelectiveScanFn.apply(u, delta, A, B, C, D, z, delta_bias, chunk)


def selective_scan_naive(u, delta, A, B, C, D, z, delta_bias, chunk=None):
    """Step-by-step loop of docs/model.md 2.1 (autograd through the loop). For --check only."""
    wt = torch.float64 if u.dtype == torch.float64 else torch.float32
    dl = F.softplus(delta.to(wt) + delta_bias.to(wt))
    Bt, L, Din = u.shape
    h = torch.zeros((Bt, Din, A.shape[1]), dtype=wt, device=u.device)
    ys = []
    for t in range(L):
        h = torch.exp(dl[:, t, :, None] * A) * h + (dl[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1) + D * u[:, t])
    y = torch.stack(ys, dim=1)
    return (y * F.silu(z.to(wt))).to(u.dtype)


# ---------------------------------------------------------------------------------------------------
# Model (docs/model.md section 1)
# ---------------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, s):  # s: fp32 residual stream
        with torch.autocast(device_type=s.device.type, enabled=False):
            s = s.float() if s.dtype != torch.float64 else s
            return s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.to(s.dtype)


class MambaMixer(nn.Module):
    def __init__(self, d_model, d_state=16, d_conv=4, expand=2, dt_min=1e-3, dt_max=1e-1,
                 dt_init_floor=1e-4, dt_scale=1.0):
        super().__init__()
        self.d_inner = d_inner = int(expand * d_model)
        self.d_state = d_state
        self.dt_rank = dt_rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, bias=True)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        # docs/model.md 1.4. in_proj, x_proj, conv1d keep PyTorch's default init (U(+-1/sqrt(fan_in))).
        s = dt_rank ** -0.5 * dt_scale
        nn.init.uniform_(self.dt_proj.weight, -s, s)
        with torch.no_grad():
            dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))               # softplus^-1(dt)
        self.dt_proj.bias._no_reinit = True
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32))
                                  .repeat(d_inner, 1).contiguous())
        self.D = nn.Parameter(torch.ones(d_inner))
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self.scan_chunk = 0          # 0 = automatic (set by the model)
        self.scan_fn = selective_scan

    def _chunk(self, Bt, L):
        """Scan chunk length: --chunk if given, else all of L when one (Bt, L, Din, N) tensor has at most
        2^26 elements, else the largest power of two that keeps a chunk tensor under that budget."""
        if self.scan_chunk > 0:
            return self.scan_chunk
        budget = 1 << 26
        per_step = Bt * self.d_inner * self.d_state
        if L * per_step <= budget:
            return L
        T = 1
        while T * 2 <= L and T * 2 * per_step <= budget:
            T *= 2
        return T

    def forward(self, hidden):                                     # (Bt, L, d_model)
        Bt, L, _ = hidden.shape
        xz = self.in_proj(hidden)                                  # (Bt, L, 2*Din)
        x, z = xz.chunk(2, dim=-1)
        x = self.conv1d(x.transpose(1, 2))[..., :L]               # causal depthwise conv, (Bt, Din, L)
        x = F.silu(x).transpose(1, 2)                              # (Bt, L, Din)
        x_dbl = self.x_proj(x)
        dt_low, Bm, Cm = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt_low, self.dt_proj.weight)              # bias goes into the scan
        wt = torch.float64 if self.A_log.dtype == torch.float64 else torch.float32   # float64: --check
        A = -torch.exp(self.A_log.to(wt))
        y = self.scan_fn(x, delta, A, Bm, Cm, self.D.to(wt), z, self.dt_proj.bias.to(wt), self._chunk(Bt, L))
        return self.out_proj(y)


class Block(nn.Module):
    def __init__(self, d_model, eps, **kw):
        super().__init__()
        self.norm = RMSNorm(d_model, eps)
        self.mixer = MambaMixer(d_model, **kw)

    def forward(self, hidden, residual):
        # Fused add + RMSNorm of docs/model.md 1.5: residual kept in fp32 (residual_in_fp32).
        wt = torch.float64 if hidden.dtype == torch.float64 else torch.float32
        residual = hidden.to(wt) if residual is None else residual + hidden.to(wt)
        return self.mixer(self.norm(residual)), residual


class MambaLM(nn.Module):
    def __init__(self, d_model, n_layer, vocab_size, d_state=16, expand=2, d_conv=4, eps=1e-5,
                 pad_multiple=8):
        super().__init__()
        self.vocab_size = vocab_size
        vp = (vocab_size + pad_multiple - 1) // pad_multiple * pad_multiple
        self.padded_vocab = vp
        self.embedding = nn.Embedding(vp, d_model)
        self.layers = nn.ModuleList(Block(d_model, eps, d_state=d_state, expand=expand, d_conv=d_conv)
                                    for _ in range(n_layer))
        self.norm_f = RMSNorm(d_model, eps)
        # _init_weights (docs/model.md 1.4): zero Linear biases not marked _no_reinit, embedding N(0, 0.02),
        # out_proj re-drawn kaiming_uniform(a=sqrt(5)) then / sqrt(n_layer) (n_residuals_per_layer = 1).
        for m in self.modules():
            if isinstance(m, nn.Linear) and m.bias is not None and not getattr(m.bias, "_no_reinit", False):
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.embedding.weight, std=0.02)
        for name, p in self.named_parameters():
            if name.endswith("out_proj.weight"):
                nn.init.kaiming_uniform_(p, a=math.sqrt(5))
                with torch.no_grad():
                    p /= math.sqrt(n_layer)

    def set_scan(self, fn, chunk=0):
        for blk in self.layers:
            blk.mixer.scan_fn = fn
            blk.mixer.scan_chunk = chunk

    def forward(self, ids):
        hidden, residual = self.embedding(ids), None
        for blk in self.layers:
            hidden, residual = blk(hidden, residual)
        wt = torch.float64 if hidden.dtype == torch.float64 else torch.float32
        residual = residual + hidden.to(wt)
        return F.linear(self.norm_f(residual), self.embedding.weight)    # tied lm head


def lm_loss(logits, targets):
    """Cross-entropy over every position (fp32 even under bf16 autocast)."""
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


# ---------------------------------------------------------------------------------------------------
# Benchmark
# ---------------------------------------------------------------------------------------------------

CONFIGS = {
    # name: d_model, n_layer, vocab, batch, L, bf16 autocast, weight decay
    "induction": dict(d_model=64, n_layer=2, vocab=16, batch=8, seq_len=256, bf16=False, wd=0.0),
    "selective_copying": dict(d_model=64, n_layer=2, vocab=16, batch=64, seq_len=4096, bf16=False, wd=0.0),
    "lm": dict(d_model=768, n_layer=24, vocab=50280, batch=8, seq_len=2048, bf16=True, wd=0.1),
}


def make_optimizer(model, lr, wd):
    if wd == 0.0:
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.ndim < 2 or getattr(p, "_no_weight_decay", False) or "embedding" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": wd},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def run_config(name, cfg, args, device, compile_model=False):
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model = MambaLM(cfg["d_model"], cfg["n_layer"], cfg["vocab"]).to(device)
    model.set_scan(selective_scan, args.chunk)
    opt = make_optimizer(model, args.lr, cfg["wd"])
    Bt, L = cfg["batch"], cfg["seq_len"]
    tokens = torch.randint(0, cfg["vocab"], (Bt, L + 1), device=device)
    inp, tgt = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    fwd = torch.compile(model) if compile_model else model
    use_amp = cfg["bf16"]

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = fwd(inp)
        loss = lm_loss(logits, tgt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.detach()

    losses, times = [], []
    for _ in range(args.warmup):
        losses.append(step())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        events = []
        for _ in range(args.steps):
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            losses.append(step())
            e1.record()
            events.append((e0, e1))
        torch.cuda.synchronize(device)
        times = [e0.elapsed_time(e1) for e0, e1 in events]
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 30
    else:
        for _ in range(args.steps):
            t0 = time.perf_counter()
            losses.append(step())
            times.append((time.perf_counter() - t0) * 1e3)
        peak = None
    ms = statistics.median(times)
    n_params = sum(p.numel() for p in model.parameters())
    chunk = model.layers[0].mixer._chunk(Bt, L)
    res = {
        "config": name, "mode": "compile" if compile_model else "eager",
        "ms_per_step": ms, "tokens_per_s": Bt * L / (ms / 1e3), "peak_gib": peak,
        "ms_min": min(times), "ms_max": max(times), "steps": args.steps, "warmup": args.warmup,
        "batch": Bt, "seq_len": L, "d_model": cfg["d_model"], "n_layer": cfg["n_layer"],
        "vocab": model.padded_vocab, "params": n_params,
        "dtype": "bf16 autocast (fp32 weights)" if use_amp else "fp32", "scan_chunk": chunk,
        "loss_first": losses[0].item(), "loss_last": losses[-1].item(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
    }
    del model, opt, fwd
    return res


def print_table(results):
    print()
    print("| config | mode | dtype | batch x L | scan chunk | ms/step | tokens/s | peak GiB | loss first -> last |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['config']} | {r['mode']} | failed: {r['error']} | | | | | | |")
            continue
        peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        tps = r["tokens_per_s"]
        tps_s = f"{tps / 1e6:.3f} M" if tps >= 1e5 else (f"{tps / 1e3:.1f} K" if tps >= 1e3 else f"{tps:.0f}")
        print(f"| {r['config']} | {r['mode']} | {r['dtype']} | {r['batch']} x {r['seq_len']} | {r['scan_chunk']} "
              f"| {r['ms_per_step']:.2f} | {tps_s} | {peak} | {r['loss_first']:.3f} -> {r['loss_last']:.3f} |")
    if results:
        r = next((r for r in results if "device" in r), None)
        if r:
            print(f"\ndevice: {r['device']}, torch {r['torch']}, median of {r['steps']} timed steps "
                  f"after {r['warmup']} warm-up steps")


# ---------------------------------------------------------------------------------------------------
# --check
# ---------------------------------------------------------------------------------------------------


def _rand_scan_inputs(Bt, L, Din, N, device, dtype=torch.float64, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)

    def r(*s, scale=1.0):
        return (torch.randn(*s, generator=g, dtype=torch.float64) * scale).to(device=device, dtype=dtype)

    u = r(Bt, L, Din)
    delta = r(Bt, L, Din)
    # Exercise the softplus threshold (> 20) and strong decays (delta*A down to about -400).
    delta.view(-1)[::7] = 25.0
    A = -torch.exp(r(Din, N, scale=0.5)) * torch.arange(1, N + 1, device=device, dtype=dtype)
    B = r(Bt, L, N)
    C = r(Bt, L, N)
    D = r(Din)
    z = r(Bt, L, Din)
    bias = r(Din, scale=0.5)
    return [u, delta, A, B, C, D, z, bias]


def _max_rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def run_check(device):
    failures = []

    def report(what, err, tol):
        ok = err <= tol
        print(f"  {'ok  ' if ok else 'FAIL'} {what}: max rel err {err:.2e} (tol {tol:.0e})")
        if not ok:
            failures.append(what)

    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]
    print("scan: chunked parallel scan vs naive sequential loop (float64, autograd through the loop)")
    for (Bt, L, Din, N, chunk) in [(2, 37, 5, 4, 8), (2, 37, 5, 4, 7), (2, 37, 5, 4, 1), (2, 37, 5, 4, 64),
                                   (1, 64, 3, 16, 16), (3, 50, 4, 3, 0)]:
        ins = _rand_scan_inputs(Bt, L, Din, N, device, seed=L + chunk)
        if chunk == 0:
            chunk = L
        ins_ref = [t.clone().requires_grad_(True) for t in ins]
        ins_new = [t.clone().requires_grad_(True) for t in ins]
        out_ref = selective_scan_naive(*ins_ref)
        out_new = selective_scan(*ins_new, chunk)
        gout = torch.randn(out_ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(device)
        (out_ref * gout).sum().backward()
        (out_new * gout).sum().backward()
        tag = f"Bt={Bt} L={L} Din={Din} N={N} chunk={chunk}"
        report(f"{tag} out", _max_rel_err(out_new, out_ref), 1e-10)
        for n, a, b in zip(names, ins_new, ins_ref):
            report(f"{tag} d{n}", _max_rel_err(a.grad, b.grad), 1e-9)

    print("scan: torch.autograd.gradcheck of the hand-written backward (float64, finite differences)")
    ins = _rand_scan_inputs(2, 11, 3, 2, device, seed=5)
    ins[1] = ins[1].clamp(max=3.0)       # keep finite differences away from the softplus kink at 20
    ins = [t.requires_grad_(True) for t in ins]
    try:
        ok = torch.autograd.gradcheck(lambda *t: selective_scan(*t, 4), ins, eps=1e-6, atol=1e-6, rtol=1e-5)
    except Exception as e:  # gradcheck raises on mismatch
        print(f"    {str(e)[:400]}")
        ok = False
    print(f"  {'ok  ' if ok else 'FAIL'} gradcheck (Bt=2 L=11 Din=3 N=2 chunk=4)")
    if not ok:
        failures.append("gradcheck")

    print("scan: fp32 chunked scan vs float64 naive loop, strong decays (Bt=2 L=300 Din=8 N=16 chunk=64)")
    ins = _rand_scan_inputs(2, 300, 8, 16, device, seed=9)
    out_ref = selective_scan_naive(*ins)
    out32 = selective_scan(*[t.float() for t in ins], 64).double()
    report("fp32 out", _max_rel_err(out32, out_ref), 1e-5)

    print("model: tiny LM with chunked scan vs naive scan (float64, loss and every parameter gradient)")
    torch.manual_seed(0)
    m1 = MambaLM(d_model=24, n_layer=2, vocab_size=11).to(device=device, dtype=torch.float64)
    m2 = MambaLM(d_model=24, n_layer=2, vocab_size=11).to(device=device, dtype=torch.float64)
    m2.load_state_dict(m1.state_dict())
    m1.set_scan(selective_scan, 8)
    m2.set_scan(selective_scan_naive, 0)
    ids = torch.randint(0, 11, (2, 29), device=device)
    tgt = torch.randint(0, 11, (2, 29), device=device)
    l1 = lm_loss(m1(ids), tgt)
    l2 = lm_loss(m2(ids), tgt)
    l1.backward()
    l2.backward()
    report("loss", abs(l1.item() - l2.item()) / abs(l2.item()), 1e-12)
    worst = max(_max_rel_err(p1.grad, p2.grad) for p1, p2 in zip(m1.parameters(), m2.parameters()))
    report("parameter gradients (worst)", worst, 1e-9)

    print("model: shapes, parameter counts and init (docs/model.md 1.2, 1.4)")
    with torch.device("meta"):
        big = MambaLM(d_model=768, n_layer=24, vocab_size=50277)
    n = sum(p.numel() for p in big.parameters())
    dm, Din, R, N, W, V = 768, 1536, 48, 16, 4, 50280
    per_layer = 2 * Din * dm + Din * W + Din + Din * (R + 2 * N) + R * Din + Din + Din * N + Din + Din * dm + dm
    expect = 24 * per_layer + V * dm + dm
    ok = n == expect and round(n / 1e6, 1) == 129.1 and big.padded_vocab == 50280
    print(f"  {'ok  ' if ok else 'FAIL'} 768 x 24, vocab 50277 -> {big.padded_vocab}: {n} parameters "
          f"(formula {expect}; the released 130m model: 129.1M)")
    if not ok:
        failures.append("parameter count")
    torch.manual_seed(0)
    small = MambaLM(d_model=64, n_layer=2, vocab_size=16)
    mx = small.layers[0].mixer
    dt = F.softplus(mx.dt_proj.bias)
    checks = [
        ("dt_rank = ceil(64/16) = 4, d_inner 128", mx.dt_rank == 4 and mx.d_inner == 128),
        ("softplus(dt bias) in [1e-3, 1e-1]", bool(dt.min() >= 1e-3 * 0.999 and dt.max() <= 1e-1 * 1.001)),
        ("A_log rows = log(1..16)", torch.allclose(mx.A_log, torch.log(torch.arange(1., 17.)).expand(128, 16))),
        ("D = 1", bool((mx.D == 1).all())),
        ("out_proj |w| <= 1/sqrt(Din)/sqrt(n_layer)",
         bool(mx.out_proj.weight.abs().max() <= 1 / math.sqrt(128) / math.sqrt(2) + 1e-7)),
        ("dt_proj |w| <= dt_rank^-0.5", bool(mx.dt_proj.weight.abs().max() <= 0.5 + 1e-7)),
        ("conv1d (128, 1, 4) with bias, |w| <= 0.5",
         tuple(mx.conv1d.weight.shape) == (128, 1, 4) and bool(mx.conv1d.weight.abs().max() <= 0.5)),
        ("x_proj (4 + 32, 128), in_proj (256, 64), no biases",
         tuple(mx.x_proj.weight.shape) == (36, 128) and tuple(mx.in_proj.weight.shape) == (256, 64)
         and mx.x_proj.bias is None and mx.in_proj.bias is None and mx.out_proj.bias is None),
        ("embedding std ~ 0.02", abs(small.embedding.weight.std().item() - 0.02) < 0.004),
    ]
    for what, ok in checks:
        print(f"  {'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            failures.append(what)

    print()
    if failures:
        print(f"CHECK FAILED: {len(failures)} mismatch(es): {', '.join(failures[:10])}")
        return 1
    print("CHECK PASSED")
    return 0


# ---------------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="all", choices=["induction", "selective_copying", "lm", "all"])
    ap.add_argument("--steps", type=int, default=20, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--chunk", type=int, default=0,
                    help="scan chunk length; 0 = automatic (<= 2^26 elements per chunk tensor)")
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny run: batch 2, L 64, 1 warm-up + 2 steps")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile(model)")
    ap.add_argument("--check", action="store_true", help="verify the scan and the model; exit 1 on mismatch")
    ap.add_argument("--json", default=None, help="write the results to this path")
    args = ap.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    if args.check:
        sys.exit(run_check(device))

    names = list(CONFIGS) if args.config == "all" else [args.config]
    if args.smoke:
        args.steps, args.warmup = min(args.steps, 2), min(args.warmup, 1)
    results = []
    for name in names:
        cfg = dict(CONFIGS[name])
        if args.smoke:
            cfg.update(batch=2, seq_len=64)
        for comp in ([False, True] if args.compile else [False]):
            label = f"{name}{' (compile)' if comp else ''}"
            print(f"running {label}: d_model {cfg['d_model']}, {cfg['n_layer']} layers, vocab {cfg['vocab']}, "
                  f"batch {cfg['batch']}, L {cfg['seq_len']}, {'bf16 autocast' if cfg['bf16'] else 'fp32'}",
                  flush=True)
            try:
                r = run_config(name, cfg, args, device, compile_model=comp)
            except Exception as e:  # report and go on (e.g. torch.compile unavailable)
                if not comp:
                    raise
                r = {"config": name, "mode": "compile", "error": f"{type(e).__name__}: {str(e)[:200]}"}
            print(f"  {r.get('ms_per_step', float('nan')):.2f} ms/step", flush=True)
            results.append(r)
    print_table(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
