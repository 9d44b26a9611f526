"""HuBERT-style masked prediction: only the frames that count are scored, and the lean loss
equals the loss computed naively from logits over every frame and class."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from icefall.ssl.hubert import IGNORE_ID, HubertConfig, HubertModel


class ToyFrontend(nn.Module):
    """(B, T, 6) -> (B, T, 16) like the wav2vec2 front end: raw features, then a projection."""

    output_dim = 16

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 8)
        self.proj = nn.Linear(8, 16)

    def cnn_features(self, x, lens):
        return self.lin(x), lens

    def project(self, raw):
        return self.proj(raw)

    def forward(self, x, lens):
        return self.project(self.lin(x)), lens


class ToyEncoder(nn.Module):
    output_dim = 12

    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(16, 12)
        self.l2 = nn.Linear(12, 12)

    def forward(self, x, lens, return_hidden=False):
        h1 = torch.tanh(self.l1(x))
        h2 = self.l2(h1)
        return (h2, lens, [h1, h2]) if return_hidden else (h2, lens)


def make(head="cosine", **kw):
    torch.manual_seed(0)
    cfg = HubertConfig(num_classes=7, head=head, final_dim=5, mask_prob=0.5, mask_length=3, **kw)
    return HubertModel(ToyFrontend(), ToyEncoder(), cfg)


def naive_loss(model, source, lens, labels, mask):
    """Logits for every frame and class, then pick the masked valid frames."""
    raw = model.frontend.lin(source)
    valid = torch.arange(source.shape[1])[None] < lens[:, None]
    pen = raw[valid].pow(2).mean()
    x = model.frontend.proj(raw)
    x = torch.where(mask.unsqueeze(-1), model.mask_emb, x)
    out, _ = model.encoder(x, lens)
    proj = model.final_proj(out)  # (B, T, final_dim or V)
    if model.label_embs_concat is not None:
        logits = F.cosine_similarity(proj.unsqueeze(2), model.label_embs_concat[None, None], dim=-1) / 0.1
    else:
        logits = proj
    B, T = mask.shape
    valid = torch.arange(T)[None] < lens[:, None]
    sel = mask & valid & (labels != IGNORE_ID)
    ce = F.cross_entropy(logits[sel], labels[sel], reduction="sum")
    return ce + model.cfg.feature_pen_weight * pen * sel.sum(), sel.sum()


@pytest.mark.parametrize("head", ["cosine", "linear"])
def test_lean_loss_equals_naive_full_logits(head):
    model = make(head)
    source = torch.randn(3, 20, 6)
    lens = torch.tensor([20, 14, 9])
    labels = torch.randint(0, 7, (3, 20))
    labels[1, 14:] = IGNORE_ID
    labels[2, 9:] = IGNORE_ID
    torch.manual_seed(123)
    loss, stats = model(source, lens, labels)
    torch.manual_seed(123)  # same mask: compute_mask draws from the global RNG
    from icefall.nn.masking import compute_mask

    mask = compute_mask((3, 20), lens, 0.5, 3, 2)
    ref, count = naive_loss(model, source, lens, labels, mask)
    assert stats["count_m"] == count.item()
    assert torch.allclose(loss, ref, rtol=1e-5, atol=1e-4)


def test_only_masked_frames_are_scored():
    model = make()
    seen = []
    model.final_proj.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    lens = torch.tensor([20, 10])
    labels = torch.randint(0, 7, (2, 20))
    loss, stats = model(torch.randn(2, 20, 6), lens, labels)
    assert seen == [stats["count_m"]]  # one projection, of exactly the masked frames
    assert 0 < stats["count_m"] < 30
    assert "count_u" not in stats
    # with an unmasked weight the unmasked valid frames are scored too
    model.cfg = model.cfg.replace(pred_nomask_weight=1.0)  # configs are frozen
    seen.clear()
    _, stats = model(torch.randn(2, 20, 6), lens, labels)
    assert sum(seen) == stats["count_m"] + stats["count_u"] == 30


def test_label_rate_100hz_is_subsampled():
    model = make(label_rate=100.0, frame_rate=50.0)
    labels = torch.arange(40).view(1, 40)
    aligned = model.align_labels(labels, 20)
    assert aligned.tolist() == [list(range(0, 40, 2))]
    # short labels are padded with IGNORE_ID, never invented
    assert model.align_labels(torch.arange(10).view(1, 10), 8).tolist() == [[0, 2, 4, 6, 8, -100, -100, -100]]


def test_gradients_reach_mask_embedding_and_label_embeddings():
    model = make()
    loss, _ = model(torch.randn(2, 20, 6), torch.tensor([20, 20]), torch.randint(0, 7, (2, 20)))
    loss.backward()
    assert model.mask_emb.grad.abs().sum() > 0
    assert model.label_embs_concat.grad.abs().sum() > 0


def test_extract_features_layers():
    model = make().eval()
    layers, lens = model.extract_features(torch.randn(2, 20, 6), torch.tensor([20, 5]))
    assert len(layers) == 3 and layers[0].shape == (2, 20, 16) and layers[2].shape == (2, 20, 12)
    only, _ = model.extract_features(torch.randn(2, 20, 6), torch.tensor([20, 5]), layers=[2])
    assert len(only) == 1 and only[0].shape == (2, 20, 12)
