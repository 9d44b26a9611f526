"""The unit LM: batched scoring, learning a toy unit language's rule, exact trainer resume."""
import random
import shutil

import pytest
import torch

pytest.importorskip("transformers")

from icefall.slm.lm import UnitLM, UnitLMConfig, encode_batch, load_unit_lm, read_unit_file
from icefall.slm.train import TokenBatchSampler, get_parser, run

NUM_UNITS = 8


def toy_sequence(rng: random.Random, n: int = 14):
    """Uniform units, except that unit 3 is always followed by unit 5."""
    s = []
    while len(s) < n:
        u = rng.randrange(NUM_UNITS)
        s += [3, 5] if u == 3 else [u]
    return s[:n] if s[n - 1] != 3 else s[: n - 1]


def toy_pair(rng: random.Random):
    """(legal, illegal): the illegal member swaps the 5 after a 3 with another unit of the
    sequence, so both hold the same units (a unigram model cannot tell them apart)."""
    while True:
        s = toy_sequence(rng)
        pos = [i for i in range(len(s) - 1) if s[i] == 3 and s[i + 1] == 5]
        others = [j for j, u in enumerate(s) if u not in (3, 5)]
        if pos and others:
            i, j = rng.choice(pos), rng.choice(others)
            bad = list(s)
            bad[i + 1], bad[j] = bad[j], bad[i + 1]
            return s, bad


def write_units(path, seqs):
    path.write_text("".join(f"utt{i} {' '.join(map(str, s))}\n" for i, s in enumerate(seqs)))
    return path


def train_toy(tmp_path, name, seqs, extra=()):
    units = write_units(tmp_path / f"{name}.txt", seqs)
    args = get_parser().parse_args([
        "--train-units", str(units), "--num-units", str(NUM_UNITS), "--exp-dir", str(tmp_path / name),
        "--num-layers", "2", "--dim", "32", "--num-heads", "2", "--ffn-dim", "64", "--max-len", "32",
        "--max-tokens", "256", "--base-lr", "3e-3", "--warmup-batches", "10", "--tensorboard", "false",
        "--num-epochs", "3", "--average-period", "2", "--log-interval", "100", *extra])
    run(0, 1, args)
    return tmp_path / name


def pair_accuracy(model, pairs):
    good = model.score([p[0] for p in pairs])
    bad = model.score([p[1] for p in pairs])
    return float((good > bad).double().mean())


def test_batched_scores_equal_one_by_one():
    torch.manual_seed(0)
    model = UnitLM(UnitLMConfig(num_units=NUM_UNITS, num_layers=2, dim=32, num_heads=2, ffn_dim=64, max_len=40))
    rng = random.Random(0)
    seqs = [[rng.randrange(NUM_UNITS) for _ in range(rng.randrange(0, 30))] for _ in range(9)]
    batched = model.score(seqs, batch_size=4)
    single = torch.cat([model.score([s]) for s in seqs])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-4)
    # the padding is not scored: a short sequence in a batch with long ones keeps its score
    assert batched.unique().numel() == len(seqs)
    norm = model.score(seqs, normalize=True)
    torch.testing.assert_close(norm, batched / torch.tensor([len(s) + 1.0 for s in seqs], dtype=torch.float64))


def test_encode_batch_layout_and_errors():
    cfg = UnitLMConfig(num_units=4, max_len=6)
    tokens, lengths = encode_batch([[1, 2], [3]], cfg)
    assert tokens.tolist() == [[5, 1, 2, 6], [5, 3, 6, 4]]
    assert lengths.tolist() == [4, 3]
    with pytest.raises(ValueError, match="units must lie"):
        encode_batch([[4]], cfg)
    with pytest.raises(ValueError, match="at most 4"):
        encode_batch([[0] * 5], cfg)


def test_read_unit_file_names_bad_line(tmp_path):
    f = tmp_path / "u.txt"
    f.write_text("a 1 2 3\nb 4 x\n")
    with pytest.raises(ValueError, match=r"u.txt:2"):
        read_unit_file(f)


def test_sampler_respects_budget_and_is_seeded():
    rng = random.Random(1)
    lengths = [rng.randrange(3, 40) for _ in range(200)]
    s = TokenBatchSampler(lengths, max_tokens=128, seed=3)
    batches = s.batches()
    assert sorted(i for b in batches for i in b) == list(range(200))
    assert all(max(lengths[i] for i in b) * len(b) <= 128 for b in batches)
    assert TokenBatchSampler(lengths, 128, seed=3).batches() == batches
    s.set_epoch(1)
    assert s.batches() != batches
    shards = [TokenBatchSampler(lengths, 128, seed=3, rank=r, world_size=2).batches() for r in range(2)]
    assert len(shards[0]) == len(shards[1]) and not set(map(tuple, shards[0])) & set(map(tuple, shards[1]))


def test_lm_learns_toy_rule_and_shuffled_units_give_chance(tmp_path):
    rng = random.Random(0)
    train = [toy_sequence(rng) for _ in range(400)]
    pairs = [toy_pair(random.Random(1000 + k)) for k in range(200)]
    # the rule: the trained LM prefers the legal member of (almost) every pair
    exp = train_toy(tmp_path, "rule", train)
    model = load_unit_lm(exp / "epoch-3.pt")
    assert pair_accuracy(model, pairs) > 0.9
    # the same units shuffled within each sequence: no rule left to learn -> near chance
    shuffled = [random.Random(k).sample(s, len(s)) for k, s in enumerate(train)]
    model = load_unit_lm(train_toy(tmp_path, "shuffled", shuffled) / "epoch-3.pt")
    acc = pair_accuracy(model, pairs)
    assert 0.35 < acc < 0.65, acc


def test_trainer_resume_is_exact(tmp_path):
    rng = random.Random(0)
    train = [toy_sequence(rng) for _ in range(120)]
    opts = ["--num-epochs", "2", "--save-every-n", "4"]
    full = train_toy(tmp_path, "full", train, opts)
    # a run killed after checkpoint-4.pt (mid epoch 1), resumed from it
    split = tmp_path / "split"
    split.mkdir()
    shutil.copy(full / "checkpoint-4.pt", split / "checkpoint-4.pt")
    train_toy(tmp_path, "split", train, opts + ["--start-batch", "4"])
    a, b = torch.load(full / "epoch-2.pt"), torch.load(split / "epoch-2.pt")
    assert a["params"]["batch_idx_train"] == b["params"]["batch_idx_train"] > 8
    for key in ("model", "model_avg"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)


def test_load_units_collapses_repeats_from_cuts_and_reads_unit_files(tmp_path):
    from lhotse import CutSet, MonoCut

    from icefall.slm.lm import collapse, load_units

    assert collapse([3, 3, 5, 5, 5, 3]).tolist() == [3, 5, 3] and collapse([]).dtype.name == "int32"
    cuts = CutSet.from_cuts([MonoCut("a", 0, 1, 0, custom={"kmeans": "3 3 5 5 5 3"}),
                             MonoCut("b", 0, 1, 0, custom={"kmeans": "7"})])
    cuts.to_file(tmp_path / "c.jsonl.gz")
    units = load_units(tmp_path / "c.jsonl.gz")
    assert {k: v.tolist() for k, v in units.items()} == {"a": [3, 5, 3], "b": [7]}
    with pytest.raises(ValueError, match="no custom\\['units'\\]"):
        load_units(tmp_path / "c.jsonl.gz", key="units")
    write_units(tmp_path / "u.txt", [[1, 2, 2]])
    assert load_units(tmp_path / "u.txt")["utt0"].tolist() == [1, 2, 2]  # unit files: as written
