#!/usr/bin/env python3
"""ARI of SCR pseudo-instances from ground-truth offsets (zero at stuff points) on 6 synthetic rooms: without ODR,
with ODR ranking every offset (before the fix) and with degenerate offsets left out (after).

    python tools/odr_ari.py
"""

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from pointins.data import synthetic as S
from pointins.data import transforms as T
from pointins.ssl.offsets import odr, scr

rows = {"no ODR": [], "ODR, all offsets ranked (before)": [], "ODR, degenerate left out (after)": []}
for i in range(6):
    sc = S.indoor_scene(0, i)
    d = T.grid_sample({k: sc[k] for k in ("coord", "segment", "instance")}, 0.08, "train", np.random.default_rng(i))
    x = torch.from_numpy(d["coord"].astype(np.float32))
    ins = torch.from_numpy(d["instance"].astype(np.int64))
    off = torch.zeros_like(x)
    for k in torch.unique(ins):
        if k < 0:
            continue
        m = ins == k
        off[m] = x[m].mean(0) - x[m]
    seg = torch.from_numpy(d["segment"].astype(np.int64))
    feat = torch.nn.functional.one_hot(seg, 32).float() + 0.01 * torch.randn(
        len(seg), 32, generator=torch.Generator().manual_seed(i)
    )
    o = torch.tensor([0, len(x)])
    for name, oo in (
        ("no ODR", off),
        ("ODR, all offsets ranked (before)", odr(off, o, "indoor", min_norm=-1.0)),
        ("ODR, degenerate left out (after)", odr(off, o, "indoor")),
    ):
        r = scr(feat, x, oo, o, k=20, iters=5, radius=0.16, min_size=8, seed=0)
        keep = ins >= 0
        rows[name].append(adjusted_rand_score(ins[keep].numpy(), r.instances[keep].numpy()))
for k, v in rows.items():
    print(f"{k:36s} ARI {np.mean(v):.3f}  (per room {', '.join(f'{a:.2f}' for a in v)})")
