"""The ASV probe as a speaker embedding of any waveform (kNN-VC's speaker similarity uses it).

    emb = SpeakerEmbedder.train("zipformer/exp-data2vec/epoch-2.pt", exp_dir="knn_vc/eval/asv-probe")
    e = emb.embed(wav)          # (E,) unit vector; the ASV score of two waveforms is e1 @ e2

The probe is the one ``probe.py --task asv`` trains (same parser, :data:`~icefall.probe.train.PROTOCOL`
budget and seed): the upstream's layers of the ``train-labeled`` split, a softmax-weighted layer
sum and the x-vector head trained to classify those speakers; its penultimate vector is the
embedding and the cosine of two embeddings the score, as the probe's EER counts it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from icefall.probe.model import Probe
from icefall.probe.upstream import Upstream


class SpeakerEmbedder:
    """A frozen upstream and its trained ASV probe.

    Attributes:
      speakers: the speakers the probe was trained on (none of them may be scored as unseen).
    """

    def __init__(self, upstream: Upstream, probe: Probe, speakers: Sequence[str]):
        self.upstream, self.probe, self.speakers = upstream, probe.eval(), list(speakers)

    @classmethod
    def train(cls, upstream: Union[str, Path], exp_dir: Union[str, Path], manifest_dir: Union[str, Path] = "data/fbank",
              prefix: str = "mini", cache_dir: Optional[Union[str, Path]] = None,
              extra_args: Sequence[str] = ()) -> "SpeakerEmbedder":
        """Train (or, when ``exp_dir`` holds its last epoch, load) the ASV probe of ``upstream``
        ("fbank" or a checkpoint) on ``<manifest_dir>/<prefix>_cuts_train-labeled.jsonl.gz``;
        ``extra_args``: more ``probe.py`` options (e.g. ``--num-epochs 2``)."""
        from icefall.probe.tasks import TASK_SPLITS, build_task
        from icefall.probe.train import apply_protocol, get_parser, load_cuts, train_probe
        from icefall.probe.upstream import load_upstream, split_features
        from icefall.utils import AttributeDict

        args = get_parser().parse_args(["--upstream", str(upstream), "--task", "asv", "--exp-dir", str(exp_dir),
                                        "--manifest-dir", str(manifest_dir), "--prefix", prefix, *extra_args])
        apply_protocol(args)
        split = TASK_SPLITS["asv"][0]
        cuts = load_cuts(args.manifest_dir, args.prefix, split)
        task = build_task("asv", cuts, [])
        up = load_upstream(args.upstream, args.device)
        feats = split_features(up, cuts, Path(cache_dir) / f"{split}.pt" if cache_dir else None)
        params = AttributeDict(vars(args))
        params.exp_dir = Path(args.exp_dir)
        return cls(up, train_probe(task, feats, up.frame_rate, params), task.symbols)

    @torch.no_grad()
    def embed_layers(self, layers: Tensor, lens: Tensor) -> Tensor:
        """Upstream layers (L, B, T, D) with ``lens`` (B,) -> (B, E) unit embeddings."""
        return F.normalize(self.probe.embed(layers, lens), dim=-1)

    def embed(self, wav: Tensor) -> Tensor:
        """A 16 kHz waveform (N,) -> its (E,) unit embedding."""
        x = self.upstream.waveform_source(wav)
        layers, lens = self.upstream(x.unsqueeze(0), torch.tensor([x.shape[0]]))
        return self.embed_layers(layers, lens)[0]
