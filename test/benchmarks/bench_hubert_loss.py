#!/usr/bin/env python3
"""Peak memory and time of HuBERT's masked-prediction head + loss, at Base size.

Three ways to compute the cosine-head loss from encoder output (B, T, 768), 500 classes,
final_dim 256, mask prob 0.8 / span 10 (about 65% of frames masked):

- ``ours``: ``HubertModel`` (gather the masked frames, normalise, one matmul, cross-entropy);
- ``all-frames``: project and score every frame against every class, then pick the masked ones;
- ``broadcast``: as ``all-frames`` with ``torch.cosine_similarity`` broadcast over
  (frames, classes, dims), the way fairseq's ``compute_nce`` scores (fairseq applies it to the
  masked frames only; here, as the naive baseline, to all frames).

Each case runs forward+backward in its own subprocess; memory is the growth of peak RSS (on
CUDA: of peak allocated memory, timed after one warm-up step).

    python test/benchmarks/bench_hubert_loss.py --batch 4 --seconds 15
"""
import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F


def run_case(case: str, batch: int, seconds: float, device: str = "cpu") -> dict:
    from icefall.ssl.hubert import HubertConfig, HubertModel
    from icefall.nn.masking import compute_mask

    torch.manual_seed(0)
    torch.set_num_threads(1)
    T = int(seconds * 50)
    cfg = HubertConfig(num_classes=500, final_dim=256)

    class _Enc(torch.nn.Module):
        output_dim = 768

    class _Front(torch.nn.Module):
        output_dim = 768

    model = HubertModel(_Front(), _Enc(), cfg).to(device)
    out = torch.randn(batch, T, 768).to(device).requires_grad_()
    labels = torch.randint(0, 500, (batch, T)).to(device)
    mask = compute_mask((batch, T), torch.full((batch,), T), 0.8, 10).to(device)
    cuda = torch.device(device).type == "cuda"

    def step() -> torch.Tensor:
        if case == "ours":
            logits = model.logits(out[mask])
            loss = F.cross_entropy(logits, labels[mask], reduction="sum")
        else:
            proj = model.final_proj(out)  # (B, T, 256) for every frame
            if case == "all-frames":
                logits = F.normalize(proj, dim=-1) @ F.normalize(model.label_embs_concat, dim=-1).t() / 0.1
            else:
                logits = torch.cosine_similarity(proj.unsqueeze(2), model.label_embs_concat[None, None], dim=-1) / 0.1
            loss = F.cross_entropy(logits[mask], labels[mask], reduction="sum")
        loss.backward()
        return loss

    if cuda:
        step()  # warm-up: the process's first CUDA calls load kernels and make the cuBLAS handle
        model.zero_grad(set_to_none=True)
        out.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 1024  # KiB, as ru_maxrss
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    loss = step()
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 1024 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"case": case, "mib": (peak - base) / 1024, "ms": 1000 * elapsed,
            "masked": float(mask.float().mean()), "loss": loss.item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--device", default="cpu", help="cuda: peak allocated memory instead of RSS")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.batch, args.seconds, args.device)))
        return
    rows = []
    for case in ("ours", "all-frames", "broadcast"):
        out = subprocess.run([sys.executable, __file__, "--case", case, "--batch", str(args.batch),
                              "--seconds", str(args.seconds), "--device", args.device],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    ours = rows[0]
    print(f"{args.device}, B={args.batch} x {args.seconds} s ({int(args.seconds * 50)} frames each), 500 classes, "
          f"{100 * ours['masked']:.0f}% of frames masked")
    print("| head + loss (forward+backward) | peak MiB | ms | MiB vs ours | same loss |")
    print("|---|---|---|---|---|")
    for r in rows:
        same = abs(r["loss"] - ours["loss"]) <= 1e-3 * abs(ours["loss"])
        print(f"| {r['case']} | {r['mib']:.1f} | {r['ms']:.0f} | {r['mib'] / max(ours['mib'], 1e-6):.1f}x | {same} |")


if __name__ == "__main__":
    main()
