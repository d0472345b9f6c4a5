#!/usr/bin/env python3
"""PyTorch reference of the MIRAGE objective and of one training step, written from docs/METHOD.md
section 2.5 independently of the Rust trainer. Two uses:

  loss   --inputs T.safetensors [--set key=value ...]
         prints {"pair","robust","ot","total","s"} like `mirage-train loss` (parity tests);
  bench  --weights W.safetensors --arch bundle-base.json --inputs X.safetensors --queue K
         --steps S --threads T --mode mirage|clip
         times full training steps (forward, loss, backward, AdamW, FIFO write) of the same model
         on the given inputs, MIRAGE and CLIP alternating, and prints the step times in ms (the
         tch-vs-PyTorch benchmark).
"""
import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

DEFAULTS = {
    "loss.lambda_pair": 1.0,
    "loss.lambda_robust": 0.2,
    "loss.lambda_ot": 0.05,
    "loss.balance": "adaptive",
    "loss.fixed_pair_weight": 1.0,
    "loss.fixed_robust_weight": 0.01,
    "loss.ot_cost": "nn_t",
    "loss.ot_weighted": False,
    "nn.mode": "soft",
    "nn.topk": 32,
    "nn.grad_to_image": True,
    "temps.max_scale": None,
}


def parse_sets(sets):
    cfg = dict(DEFAULTS)
    for s in sets:
        k, v = s.split("=", 1)
        if k not in cfg:
            sys.exit(f"unknown key {k}")
        v = v.strip()
        if v in ("true", "false"):
            cfg[k] = v == "true"
        else:
            try:
                cfg[k] = float(v) if "." in v or "e" in v else int(v)
            except ValueError:
                cfg[k] = v.strip('"')
    return cfg


def is_clip(cfg):
    return cfg["loss.lambda_robust"] == 0 and cfg["loss.lambda_ot"] == 0 and cfg["loss.balance"] == "none"


def sigma(theta, cfg):
    s = theta.exp()
    return s.clamp(max=cfg["temps.max_scale"]) if cfg["temps.max_scale"] is not None else s


def nn_text(v, Q, sq, cfg):
    """Soft (or hard / top-k) nearest-neighbour text of every image row, unit norm."""
    Q = Q.detach()
    if not cfg["nn.grad_to_image"]:
        v = v.detach()
    sims = v @ Q.T
    mode = cfg["nn.mode"]
    if mode == "soft":
        mixed = torch.softmax(sq * sims, dim=-1) @ Q
    elif mode == "hard":
        mixed = Q[sims.argmax(dim=-1)]
    else:
        vals, idx = sims.topk(min(int(cfg["nn.topk"]), Q.shape[0]), dim=-1)
        a = torch.softmax(sq * vals, dim=-1)
        mixed = (a.unsqueeze(-1) * Q[idx]).sum(1)
    return F.normalize(mixed, dim=-1)


def mirage_loss(v_raw, t_raw, Q, theta, cfg):
    v = F.normalize(v_raw.float(), dim=-1)
    t = F.normalize(t_raw.float(), dim=-1)
    sp, sr, so, sq = (sigma(theta[i], cfg) for i in range(4))
    B = v.shape[0]
    g = torch.arange(B, device=v.device)
    clip = is_clip(cfg)
    if clip:
        n = None
        s = torch.zeros(B, device=v.device)
    else:
        n = nn_text(v, Q, sq, cfg)
        s = (t * n).sum(-1).detach()
    bal = cfg["loss.balance"]
    s_w = torch.zeros_like(s) if bal == "none" else s
    if bal == "adaptive":
        wp, wn = 1 + s_w, 1 - s_w
    elif bal == "convex":
        wp, wn = (1 + s_w) / 2, (1 - s_w) / 2
    elif bal == "fixed":
        wp = torch.full_like(s, cfg["loss.fixed_pair_weight"])
        wn = torch.full_like(s, cfg["loss.fixed_robust_weight"])
    else:
        wp, wn = torch.ones_like(s), torch.ones_like(s)

    def ce(logits):
        return F.cross_entropy(logits, g, reduction="none")

    Lp = ((wp * ce(sp * v @ t.T)).mean() + (wp * ce(sp * t @ v.T)).mean()) / 2
    zero = torch.zeros((), device=v.device)
    Lr = zero
    if n is not None and cfg["loss.lambda_robust"] != 0:
        Lr = ((wn * ce(sr * v @ n.T)).mean() + (wn * ce(sr * n @ v.T)).mean()) / 2
    Lo = zero
    if cfg["loss.lambda_ot"] != 0:
        Pv = torch.softmax(so * v @ t.T, dim=-1)
        Pt = torch.softmax(so * t @ v.T, dim=-1)
        td = t.detach()
        nd = n.detach() if n is not None else None
        kind = cfg["loss.ot_cost"]
        if kind == "nn_t":
            Ci = Ct = -(td @ nd.T)
        elif kind == "nn_t_sym":
            Ct = -(td @ nd.T)
            Ci = -(nd @ td.T)
        elif kind == "t_t":
            Ci = Ct = -(td @ td.T)
        elif kind == "i_t":
            Ci = Ct = -(v.detach() @ td.T)
        elif kind == "nn_nn":
            Ci = Ct = -(nd @ nd.T)
        else:
            Ci = Ct = 1 - torch.eye(B, device=v.device)
        img = (Pv * Ci).sum(-1)
        if cfg["loss.ot_weighted"]:
            img = img * wp
        Lo = (img.mean() + (Pt * Ct).sum(-1).mean()) / 2
    total = cfg["loss.lambda_pair"] * Lp + cfg["loss.lambda_robust"] * Lr + cfg["loss.lambda_ot"] * Lo
    return total, Lp, Lr, Lo, s, t.detach()


# ---------------------------------------------------------------- towers (mirage-model names)

def linear(P, name, x):
    return F.linear(x, P[name + ".weight"], P[name + ".bias"])


def layer_norm(P, name, x, eps):
    w = P[name + ".weight"]
    return F.layer_norm(x, (w.shape[0],), w, P[name + ".bias"], eps)


def attention(q, k, v, heads, mask=None):
    B, Lq, H = q.shape
    L = k.shape[1]
    hd = H // heads
    q = q.view(B, Lq, heads, hd).transpose(1, 2)
    k = k.view(B, L, heads, hd).transpose(1, 2)
    v = v.view(B, L, heads, hd).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) * hd ** -0.5
    if mask is not None:
        scores = scores + mask
    return (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(B, Lq, H)


def text_tower(P, c, ids, mask, train, dropout=0.1):
    L = ids.shape[1]
    pos = torch.arange(L)
    x = (F.embedding(ids, P["text.embeddings.word_embeddings.weight"])
         + F.embedding(pos, P["text.embeddings.position_embeddings.weight"])
         + F.embedding(torch.zeros_like(ids), P["text.embeddings.token_type_embeddings.weight"]))
    eps = c.get("layer_norm_eps", 1e-12)
    x = F.dropout(layer_norm(P, "text.embeddings.LayerNorm", x, eps), dropout, train)
    bias = ((1 - mask.float()) * -1e9)[:, None, None, :]
    for i in range(c["num_hidden_layers"]):
        n = f"text.encoder.layer.{i}"
        q = linear(P, n + ".attention.self.query", x)
        k = linear(P, n + ".attention.self.key", x)
        v = linear(P, n + ".attention.self.value", x)
        ctx = attention(q, k, v, c["num_attention_heads"], bias)
        a = F.dropout(linear(P, n + ".attention.output.dense", ctx), dropout, train)
        a = layer_norm(P, n + ".attention.output.LayerNorm", a + x, eps)
        h = F.gelu(linear(P, n + ".intermediate.dense", a))
        o = F.dropout(linear(P, n + ".output.dense", h), dropout, train)
        x = layer_norm(P, n + ".output.LayerNorm", o + a, eps)
    m = mask.float().unsqueeze(2)
    return (x * m).sum(1) / m.sum(1).clamp(min=1e-9)


def conv_bn(P, pre, conv, bn, x, stride, train):
    w = P[f"{pre}.{conv}.weight"]
    k = w.shape[2]
    y = F.conv2d(x, w, None, stride, k // 2)
    g = lambda n: P[f"{pre}.{bn}.{n}"]
    return F.batch_norm(y, g("running_mean"), g("running_var"), g("weight"), g("bias"), train, 0.1, 1e-5)


def resnet_tower(P, c, x, train):
    x = F.max_pool2d(conv_bn(P, "vision", "conv1", "bn1", x, 2, train).relu(), 3, 2, 1)
    exp = 4 if c["bottleneck"] else 1
    in_c = c["width"]
    for stage, blocks in enumerate(c["layers"]):
        planes = c["width"] << stage
        for b in range(blocks):
            pre = f"vision.layer{stage + 1}.{b}"
            stride = 2 if b == 0 and stage > 0 else 1
            if c["bottleneck"]:
                y = conv_bn(P, pre, "conv1", "bn1", x, 1, train).relu()
                y = conv_bn(P, pre, "conv2", "bn2", y, stride, train).relu()
                y = conv_bn(P, pre, "conv3", "bn3", y, 1, train)
            else:
                y = conv_bn(P, pre, "conv1", "bn1", x, stride, train).relu()
                y = conv_bn(P, pre, "conv2", "bn2", y, 1, train)
            if b == 0 and (stride != 1 or in_c != planes * exp):
                idn = conv_bn(P, pre, "downsample.0", "downsample.1", x, stride, train)
            else:
                idn = x
            x = (y + idn).relu()
            in_c = planes * exp
    if c["pooling"] == "mean":
        return x.mean((2, 3))
    B, C, H, W = x.shape
    tok = x.view(B, C, H * W).transpose(1, 2)
    seq = torch.cat([tok.mean(1, keepdim=True), tok], 1) + P["vision.attnpool.positional_embedding"]
    q = linear(P, "vision.attnpool.q_proj", seq[:, :1])
    k = linear(P, "vision.attnpool.k_proj", seq)
    v = linear(P, "vision.attnpool.v_proj", seq)
    out = attention(q, k, v, c.get("attention_heads", 8))
    return linear(P, "vision.attnpool.c_proj", out.squeeze(1))


def bench(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    arch = json.load(open(args.arch))["architecture"]
    if arch["vision"]["kind"] != "resnet":
        sys.exit("bench: only ResNet vision towers")
    raw = load_file(args.weights)
    inputs = load_file(args.inputs)
    pixels, ids = inputs["pixels"].float(), inputs["ids"].long()
    B, D = pixels.shape[0], arch["embed_dim"]
    mask = torch.ones_like(ids)
    c_text, c_vis = arch["text"]["bert"], arch["vision"]
    modes = ["mirage", "clip"] if args.mode == "both" else [args.mode]
    runs = []
    for mode in modes:
        P = {k: v.float().clone() for k, v in raw.items()}
        buffers = {k for k in P if k.endswith("running_mean") or k.endswith("running_var")}
        params = [v.requires_grad_() for k, v in P.items() if k not in buffers]
        opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.2,
                                foreach=args.foreach)
        cfg = parse_sets(["loss.lambda_robust=0", "loss.lambda_ot=0", "loss.balance=none"]
                         if mode == "clip" else [])
        gen = torch.Generator().manual_seed(1)
        Q = F.normalize(torch.randn(args.queue, D, generator=gen), dim=-1)
        runs.append({"mode": mode, "P": P, "opt": opt, "cfg": cfg, "Q": Q, "ptr": 0, "times": []})
    # The modes alternate step by step, as on the tch side.
    for step in range(args.warmup + args.steps):
        for r in runs:
            P = r["P"]
            t0 = time.perf_counter()
            v = linear(P, "vision_proj", resnet_tower(P, c_vis, pixels, True))
            t = linear(P, "text_proj", text_tower(P, c_text, ids, mask, True))
            theta = torch.stack([P["logit_scale"], P["log_scale.robust"], P["log_scale.ot"], P["log_scale.queue"]])
            total, *_rest, t_unit = mirage_loss(v, t, r["Q"], theta, r["cfg"])
            total.backward()
            r["opt"].step()
            r["opt"].zero_grad(set_to_none=False)
            if r["mode"] != "clip":
                with torch.no_grad():
                    r["Q"][r["ptr"]:r["ptr"] + B] = t_unit
                r["ptr"] = (r["ptr"] + B) % args.queue
            if step >= args.warmup:
                r["times"].append(1000 * (time.perf_counter() - t0))
    out = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    for r in runs:
        out[r["mode"] + "_ms"] = r["times"]
    print(json.dumps(out))


def adamw(args):
    """torch.optim.AdamW on `param` with the gradient sequence `grads` [S, ...]; prints the result."""
    T = load_file(args.inputs)
    p = T["param"].double().clone().requires_grad_()
    opt = torch.optim.AdamW([p], lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=args.wd,
                            foreach=False)
    for g in T["grads"].double():
        p.grad = g.clone()
        opt.step()
    print(json.dumps({"param": p.detach().flatten().tolist()}))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    ap_ = sub.add_parser("adamw")
    ap_.add_argument("--inputs", required=True)
    ap_.add_argument("--lr", type=float, required=True)
    ap_.add_argument("--wd", type=float, required=True)
    lp = sub.add_parser("loss")
    lp.add_argument("--inputs", required=True)
    lp.add_argument("--set", action="append", default=[])
    bp = sub.add_parser("bench")
    bp.add_argument("--weights", required=True)
    bp.add_argument("--arch", required=True)
    bp.add_argument("--inputs", required=True, help="safetensors with pixels [B,3,S,S] and ids [B,L]")
    bp.add_argument("--queue", type=int, default=4096)
    bp.add_argument("--steps", type=int, default=10)
    bp.add_argument("--warmup", type=int, default=2)
    bp.add_argument("--threads", type=int, default=1)
    bp.add_argument("--mode", choices=["mirage", "clip", "both"], default="both")
    bp.add_argument("--foreach", action="store_true")
    args = ap.parse_args()
    if args.cmd == "bench":
        return bench(args)
    if args.cmd == "adamw":
        return adamw(args)
    T = load_file(args.inputs)
    cfg = parse_sets(args.set)
    total, Lp, Lr, Lo, s, _ = mirage_loss(T["image_features"], T["text_features"], T["queue"],
                                          T["log_scales"].float(), cfg)
    print(json.dumps({"pair": Lp.item(), "robust": float(Lr), "ot": float(Lo), "total": total.item(),
                      "s": s.tolist()}))


if __name__ == "__main__":
    main()
