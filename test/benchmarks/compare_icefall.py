#!/usr/bin/env python3
"""Our models loaded by ``icefall.ssl.icefall_import`` against icefall's own modules, in float64.

Needs a checkout of k2-fsa/icefall (only its ``egs/librispeech/{ASR,SSL}`` recipe files are
imported; k2 is not needed). A subprocess builds icefall's models from that checkout - an ASR
AsrModel (Conv2dSubsampling + Zipformer2 + stateless decoder + joiner + CTC) and a k2SSL
HubertModel - perturbs their weights, writes them as icefall's save_checkpoint does (options
flat beside ``model``) and records their float64 outputs; this process imports the checkpoints
and compares.

    python test/benchmarks/compare_icefall.py --icefall ~/icefall [--config tiny|base]

In that subprocess ``icefall.utils`` (icefall's library, which our package shadows) and ``k2``
(whose Swoosh kernels icefall's scaling.py calls) are stand-ins written below: the Swoosh
functions by their float64 formulas.  k2SSL's first-layer group norm is fp32 by design
(``Fp32GroupNorm``); the row "k2SSL, fp32 group norm" runs ours in fp32 there too.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

CONFIGS = {
    "tiny": dict(encoder_dim="32,48,64,48", num_encoder_layers="1,2,1,1", downsampling_factor="1,2,4,2",
                 encoder_unmasked_dim="32,32,48,32", query_head_dim="8", pos_head_dim="4", value_head_dim="6",
                 pos_dim=16, num_heads="2,2,4,2", feedforward_dim="64,96,128,96",
                 cnn_module_kernel="15,15,7,15", conv_channels=32),
    # icefall's defaults (ASR train.py and SSL pretrain.py share them)
    "base": dict(encoder_dim="192,256,384,512,384,256", num_encoder_layers="2,2,3,4,3,2",
                 downsampling_factor="1,2,4,8,4,2", encoder_unmasked_dim="192,192,256,256,256,192",
                 query_head_dim="32", pos_head_dim="4", value_head_dim="12", pos_dim=48, num_heads="4,4,4,8,4,4",
                 feedforward_dim="512,768,1024,1536,1024,768", cnn_module_kernel="31,31,15,15,15,31",
                 conv_channels=512),
}

STAND_INS = {
    "k2/__init__.py": '''
        import torch
        def swoosh_l(x): return torch.logaddexp(torch.zeros_like(x), x - 4.0) - 0.08 * x - 0.035
        def swoosh_r(x): return torch.logaddexp(torch.zeros_like(x), x - 1.0) - 0.08 * x - 0.313261687
        swoosh_l_forward, swoosh_r_forward = swoosh_l, swoosh_r
        class RaggedTensor: pass
        ''',
    "icefall/__init__.py": "",
    "icefall/utils.py": '''
        import torch
        def torch_autocast(device_type="cuda", **kwargs): return torch.amp.autocast(device_type=device_type, **kwargs)
        def make_pad_mask(lengths, max_len=0):
            n = max(max_len, int(lengths.max()))
            return torch.arange(n, device=lengths.device).expand(lengths.numel(), n) >= lengths.unsqueeze(-1)
        def add_sos(*args, **kwargs): raise NotImplementedError
        def time_warp(*args, **kwargs): raise NotImplementedError
        ''',
}

# Runs in the subprocess, with icefall's recipe directory on sys.path.
ICEFALL_SIDE = '''
import argparse, json, sys, warnings
warnings.filterwarnings("ignore")
out_dir, kind, cfg = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
import torch
import torch.nn.functional as F
torch.manual_seed(0)
ch = cfg.pop("conv_channels")
t = lambda s: tuple(map(int, s.split(",")))

def perturb(m):
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)

if kind == "asr":
    from decoder import Decoder
    from joiner import Joiner
    from model import AsrModel
    from scaling import ScheduledFloat
    from subsampling import Conv2dSubsampling
    from zipformer import Zipformer2
    dim = t(cfg["encoder_dim"])
    enc = Zipformer2(output_downsampling_factor=2, downsampling_factor=t(cfg["downsampling_factor"]),
        num_encoder_layers=t(cfg["num_encoder_layers"]), encoder_dim=dim,
        encoder_unmasked_dim=t(cfg["encoder_unmasked_dim"]), query_head_dim=t(cfg["query_head_dim"]),
        pos_head_dim=t(cfg["pos_head_dim"]), value_head_dim=t(cfg["value_head_dim"]), pos_dim=cfg["pos_dim"],
        num_heads=t(cfg["num_heads"]), feedforward_dim=t(cfg["feedforward_dim"]),
        cnn_module_kernel=t(cfg["cnn_module_kernel"]))
    embed = Conv2dSubsampling(80, dim[0], dropout=ScheduledFloat((0.0, 0.3), (20000.0, 0.1)))
    m = AsrModel(embed, enc, Decoder(10, 16, 0, 2), Joiner(max(dim), 16, 16, 10), encoder_dim=max(dim),
                 decoder_dim=16, vocab_size=10, use_transducer=True, use_ctc=True)
    perturb(m)
    torch.save({"model": m.state_dict(), "optimizer": None, "feature_dim": 80, "causal": False, **cfg},
               f"{out_dir}/asr.pt")
    m = m.double().eval()
    feats, y = torch.randn(1, 201, 80, dtype=torch.float64), torch.tensor([[0, 3, 5, 2, 7]])
    with torch.no_grad():
        out, lens = m.forward_encoder(feats, torch.tensor([201]))
        ref = dict(feats=feats, y=y, out=out, ctc=m.ctc_output(out),
                   joint=m.joiner(out[:, :, None], m.decoder(y)[:, None]))
else:
    from hubert_ce import HubertModel
    opts = dict(cfg, conv_feature_layers=f"[({ch},10,5)] + [({ch},3,2)] * 4 + [({ch},2,2)] * 2",
        extractor_mode="default", conv_bias=False, label_rate=50, sample_rate=16000, mask_prob=0.65,
        mask_selection="static", mask_other=0, mask_length=10, no_mask_overlap=False, mask_min_space=1,
        mask_channel_prob=0.0, mask_channel_selection="static", mask_channel_other=0,
        mask_channel_length=10, no_mask_channel_overlap=False, mask_channel_min_space=1,
        dropout_input=0.0, dropout_features=0.0, feature_grad_mult=1.0, logit_temp=0.1, skip_masked=False,
        skip_nomask=False, untie_final_proj=False, num_classes=[20], pred_masked_weight=1,
        pred_nomask_weight=0, loss_weights=[10], do_normalize=True)
    m = HubertModel(argparse.Namespace(**opts))
    perturb(m)
    torch.save({"model": m.state_dict(), "optimizer": None, **opts}, f"{out_dir}/k2ssl.pt")
    m = m.double().eval()
    wav = torch.randn(1, 32000, dtype=torch.float64)
    with torch.no_grad():  # k2SSL's data pipeline normalises each waveform (do_normalize)
        out, _ = m.extract_features(F.layer_norm(wav, wav.shape[1:]), torch.zeros(1, 32000, dtype=torch.bool))
        ref = dict(wav=wav, out=out, logits=m.final_proj(out) / m.logit_temp)
torch.save(ref, f"{out_dir}/{kind}_ref.pt")
print(sum(p.numel() for p in m.parameters()))
'''


def run_icefall_side(icefall: Path, out_dir: Path, kind: str, cfg: dict) -> int:
    stand_ins = out_dir / "stand_ins"
    for name, text in STAND_INS.items():
        (stand_ins / name).parent.mkdir(parents=True, exist_ok=True)
        (stand_ins / name).write_text(textwrap.dedent(text))
    recipe = icefall / "egs/librispeech" / ("ASR" if kind == "asr" else "SSL") / "zipformer"
    script = f"import sys; sys.path[:0] = [{str(stand_ins)!r}, {str(recipe)!r}]\n" + ICEFALL_SIDE
    res = subprocess.run([sys.executable, "-c", script, str(out_dir), kind, json.dumps(cfg)],
                         capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ""})
    if res.returncode != 0:
        sys.exit(f"icefall side failed:\n{res.stderr[-3000:]}")
    return int(res.stdout.split()[-1])


def max_diff(a: torch.Tensor, b: torch.Tensor) -> str:
    return f"{(a - b).abs().max().item():.3g} (max |ref| {b.abs().max().item():.3g})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--icefall", type=Path, required=True, help="a k2-fsa/icefall checkout")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    args = parser.parse_args()

    import icefall.nn.frontend as frontend
    from icefall.asr.model import AsrModel
    from icefall.ssl.fairseq_import import build_hubert_from_params
    from icefall.ssl.icefall_import import load_icefall_checkpoint

    def to_float64(model, ref_state, extra):
        """Load the float32 checkpoint into a float64 model (so nothing rounds on the way)."""
        model.double().eval()
        model.load_state_dict({k: v.double() for k, v in {**ref_state, **extra}.items()})
        return model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        n_asr = run_icefall_side(args.icefall, out, "asr", dict(CONFIGS[args.config]))
        imp = load_icefall_checkpoint(out / "asr.pt")
        ref = torch.load(out / "asr_ref.pt")
        model = AsrModel(imp.build_encoder(), **imp.asr_options())
        model = to_float64(model, {"encoder." + k: v for k, v in imp.encoder_state.items()}, imp.asr_head_state())
        with torch.no_grad():
            enc, _ = model.forward_encoder(ref["feats"], torch.tensor([ref["feats"].shape[1]]))
            rows += [("ASR encoder", n_asr, max_diff(enc, ref["out"])),
                     ("ASR CTC log-probs", n_asr, max_diff(model.ctc_output(enc), ref["ctc"])),
                     ("ASR joiner", n_asr, max_diff(model.joiner(enc[:, :, None], model.decoder(ref["y"])[:, None]),
                                                    ref["joint"]))]

        n_ssl = run_icefall_side(args.icefall, out, "k2ssl", dict(CONFIGS[args.config]))
        imp = load_icefall_checkpoint(out / "k2ssl.pt")
        ref = torch.load(out / "k2ssl_ref.pt")
        # final_proj / logit_temp, computed in float64 from the stored float32 weights
        raw = torch.load(out / "k2ssl.pt")["model"]
        head = {f"final_proj.{p}": raw[f"final_proj.{p}"].double() / 0.1 for p in ("weight", "bias")}
        model = to_float64(build_hubert_from_params(imp.params), imp.encoder_state,
                           {**imp.ssl_state, **head})
        lens = torch.tensor([ref["wav"].shape[1]])
        with torch.no_grad():
            enc = model.encode(ref["wav"], lens)["out"]
            rows += [("k2SSL encoder", n_ssl, max_diff(enc, ref["out"])),
                     ("k2SSL CE logits", n_ssl, max_diff(model.logits(enc), ref["logits"]))]
            frontend._MaskedGroupNorm.forward = lambda self, x, l: torch.nn.functional.group_norm(
                x.float(), x.shape[1], self.weight.float(), self.bias.float(), self.eps).to(x.dtype)
            enc = model.encode(ref["wav"], lens)["out"]
            rows += [("k2SSL encoder, fp32 group norm", n_ssl, max_diff(enc, ref["out"])),
                     ("k2SSL CE logits, fp32 group norm", n_ssl, max_diff(model.logits(enc), ref["logits"]))]

    print(f"config {args.config}; icefall's models vs ours (float64, max abs difference)")
    print(f"{'output':32s} {'icefall params':>15s}  max |ours - icefall|")
    for name, n, diff in rows:
        print(f"{name:32s} {n:15,d}  {diff}")


if __name__ == "__main__":
    main()
