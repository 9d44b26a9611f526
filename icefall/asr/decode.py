"""Decoding a fine-tuned AsrModel on test splits, with icefall-style result files.

    ./zipformer/decode.py --epoch 20 --avg 5 --use-averaged-model true \\
        --decoding-method greedy_search --test-splits test dev
    ./zipformer/decode.py --checkpoint zipformer/exp-ft/pretrained.pt --decoding-method ctc-greedy-search

Methods: ``greedy_search`` and ``modified_beam_search`` (transducer head), ``ctc-greedy-search``
and ``ctc-prefix-beam-search`` (CTC head), and word-level ``ctc-lexicon`` (words of
``--lexicon`` only) and ``ctc-lexicon-lm`` (plus the n-gram LM ``--lm`` with ``--lm-weight``
and ``--word-score``; see ``icefall.asr.lm_decode``, tuned by ``tune_lm.py``), and
``modified_beam_search_lm_shallow_fusion`` (the transducer's beam search plus ``--lm-weight``
times a token n-gram LM, ``--token-lm``). The architecture comes from the ``params`` stored in
the checkpoint (``build_asr_model``), so only the weights' location is needed. Results go to
``<exp-dir>/<method>/``: ``recogs-<split>-<key>.txt``, ``errs-<split>-<key>.txt`` and
``wer-summary-<split>-<key>.txt`` with ``key`` e.g. ``greedy_search-epoch-20-avg-5-use-averaged-model``.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from icefall.asr.ctc import ctc_greedy_search, ctc_prefix_beam_search
from icefall.asr.model import AsrModel
from icefall.asr.search import greedy_search_batch, modified_beam_search
from icefall.checkpoint import averaged_state_dict_for_decoding, load_file
from icefall.models import build_model, check_kind, load_weights, model_config_of
from icefall.data.datamodule import DataModule
from icefall.data.tokenizer import load_tokenizer
from icefall.eval.wer import Result, save_results
from icefall.utils import AttributeDict, setup_logger, str2bool

TRANSDUCER_METHODS = ("greedy_search", "modified_beam_search")
CTC_METHODS = ("ctc-greedy-search", "ctc-prefix-beam-search")
LEXICON_METHODS = ("ctc-lexicon", "ctc-lexicon-lm")  # word-level, flashlight-text
FUSION_METHODS = ("modified_beam_search_lm_shallow_fusion",)  # transducer + token n-gram LM
BEAM_METHODS = ("modified_beam_search", "ctc-prefix-beam-search") + FUSION_METHODS


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Which weights to use: ``--checkpoint``, or ``--epoch/--iter --avg --use-averaged-model``."""
    g = parser.add_argument_group("model")
    g.add_argument("--exp-dir", type=Path, default=Path("zipformer/exp-ft"))
    g.add_argument("--epoch", type=int, default=20, help="decode epoch-N.pt (averaged with --avg)")
    g.add_argument("--iter", type=int, default=0, help="> 0: use checkpoint-<iter>.pt instead of --epoch")
    g.add_argument("--avg", type=int, default=1, help="number of epochs / checkpoints to average")
    g.add_argument("--use-averaged-model", type=str2bool, default=True,
                   help="average with the running-average models of the end points (needs avg+1 checkpoints)")
    g.add_argument("--checkpoint", type=Path, default=None,
                   help="pretrained.pt from export.py (or any checkpoint: its 'model'); overrides --epoch/--iter")
    g.add_argument("--lang-dir", type=Path, default=Path("data/lang_bpe_500"), help="tokens.txt (+ bpe.model)")


def get_parser(**defaults) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Decode a fine-tuned CTC / transducer model",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_model_arguments(parser)
    g = parser.add_argument_group("decoding")
    g.add_argument("--decoding-method", default="greedy_search",
                   choices=TRANSDUCER_METHODS + CTC_METHODS + LEXICON_METHODS + FUSION_METHODS)
    g.add_argument("--beam-size", type=int, default=None,
                   help="hypotheses kept: default 4 for modified_beam_search and "
                        "ctc-prefix-beam-search, 50 for the lexicon methods")
    add_lm_arguments(parser)
    g.add_argument("--test-splits", nargs="+", default=["test"],
                   help="decode <manifest-dir>/<cuts-prefix>_cuts_<split>.jsonl.gz")
    g.add_argument("--res-dir", type=Path, default=None, help="default <exp-dir>/<decoding-method>")
    DataModule.add_arguments(parser)
    parser.set_defaults(max_duration=600.0)
    parser.set_defaults(**defaults)
    return parser


def add_lm_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the lexicon methods, shallow fusion and tune_lm.py."""
    g = parser.add_argument_group("lexicon and LM decoding, shallow fusion")
    g.add_argument("--lexicon", type=Path, default=None, help="default <lang-dir>/lexicon.txt")
    g.add_argument("--lm", type=Path, default=Path("data/lm/3gram.arpa"),
                   help="word n-gram LM (ARPA or KenLM binary) of ctc-lexicon-lm")
    g.add_argument("--token-lm", type=Path, default=None,
                   help="token n-gram LM of modified_beam_search_lm_shallow_fusion; "
                        "default <lang-dir>/token-4gram.arpa")
    g.add_argument("--lm-weight", type=float, default=0.5, help="weight of the LM's log10 probs")
    g.add_argument("--word-score", type=float, default=0.0, help="added per word")
    g.add_argument("--beam", type=float, default=25.0,
                   help="lexicon methods: drop hypotheses this far (log prob) below the best")


def beam_size_of(args: argparse.Namespace) -> int:
    if args.beam_size is not None:
        return args.beam_size
    return 50 if args.decoding_method in LEXICON_METHODS else 4


def lexicon_decoder(args: argparse.Namespace):
    """The ``CtcLexiconDecoder`` of a lexicon method (LM only for ctc-lexicon-lm)."""
    from icefall.asr.lm_decode import load_lexicon_decoder

    lm = args.lm if args.decoding_method == "ctc-lexicon-lm" else None
    return load_lexicon_decoder(args.lang_dir, args.lexicon, lm, lm_weight=args.lm_weight,
                                word_score=args.word_score, beam_size=beam_size_of(args),
                                beam=args.beam)


def token_lm(args: argparse.Namespace):
    """The ``TokenNgramLM`` of shallow fusion."""
    from icefall.asr.lm_decode import TokenNgramLM
    from icefall.data.tokenizer import read_tokens

    path = Path(args.token_lm or Path(args.lang_dir) / "token-4gram.arpa")
    return TokenNgramLM(path, read_tokens(Path(args.lang_dir) / "tokens.txt"))


def model_suffix(args: argparse.Namespace) -> str:
    """Names the weights in result files: ``epoch-20-avg-5-use-averaged-model``, ``iter-..``, or
    the checkpoint's file stem."""
    if args.checkpoint is not None:
        return Path(args.checkpoint).stem
    suffix = f"iter-{args.iter}-avg-{args.avg}" if args.iter > 0 else f"epoch-{args.epoch}-avg-{args.avg}"
    return suffix + ("-use-averaged-model" if args.use_averaged_model else "")


def decoding_key(args: argparse.Namespace) -> str:
    method = args.decoding_method
    beam = f"-beam-{beam_size_of(args)}" if method in BEAM_METHODS else ""
    if method in FUSION_METHODS:
        beam += f"-lm-weight-{args.lm_weight:g}"
    if method in LEXICON_METHODS:
        beam = f"-beam-size-{beam_size_of(args)}-beam-{args.beam:g}"
        if method == "ctc-lexicon-lm":
            beam += f"-lm-{Path(args.lm).stem}-lm-weight-{args.lm_weight:g}"
        beam += f"-word-score-{args.word_score:g}"
    return f"{method}{beam}-{model_suffix(args)}"


def load_model(
    args: argparse.Namespace, device: torch.device = torch.device("cpu"), purpose: str = "decoding"
) -> Tuple[AsrModel, AttributeDict]:
    """The fine-tuned model named by the model arguments, in eval mode, and the params it was
    trained with.

    The architecture (``params["model_config"]``) is read from ``--checkpoint``, else from the
    newest checkpoint being averaged (``epoch-<epoch>.pt`` or ``checkpoint-<iter>.pt``). Any other
    kind of checkpoint (e.g. a pretraining one) is a :class:`icefall.models.CheckpointKindError`.
    """
    if args.checkpoint is not None:
        ckpt = load_file(args.checkpoint)
        config = model_config_of(ckpt, args.checkpoint)
        check_kind(config, "asr", args.checkpoint, purpose)
        model_params, state, source = AttributeDict(ckpt["params"]), ckpt["model"], args.checkpoint
        logging.info(f"Loading {args.checkpoint}")
    else:
        exp_dir = Path(args.exp_dir)
        newest = exp_dir / (f"checkpoint-{args.iter}.pt" if args.iter > 0 else f"epoch-{args.epoch}.pt")
        model_params = AttributeDict(load_file(newest)["params"])
        config = model_config_of({"params": model_params}, newest)
        check_kind(config, "asr", newest, purpose)
        state = averaged_state_dict_for_decoding(exp_dir, args.epoch, args.iter, args.avg, args.use_averaged_model)
        source = newest
        logging.info(f"Loaded {model_suffix(args)} from {exp_dir}")
    model = build_model(config)
    load_weights(model, state, source, config)  # copies (float64 running averages included) into float32 params
    model_params.model_config = config.to_dict()
    return model.to(device).eval(), model_params


def input_type(model_params: AttributeDict) -> str:
    """What the model reads: 16 kHz ``wav`` (CNN front end) or 80-dim ``fbank``."""
    return model_config_of({"params": dict(model_params)}).input_type


@torch.no_grad()
def decode_batch(model: AsrModel, x: Tensor, x_lens: Tensor, method: str, beam_size: int = 4,
                 lexicon_decoder=None, token_lm=None, lm_weight: float = 0.0) -> List[List]:
    """Token ids of each utterance; words (strings) for the lexicon methods.

    Args:
      x: (B, T, 80) fbank or (B, N) waveform; x_lens: (B,) valid frames / samples.
      method: one of TRANSDUCER_METHODS + CTC_METHODS + LEXICON_METHODS + FUSION_METHODS.
      lexicon_decoder: a ``CtcLexiconDecoder``, for the lexicon methods.
      token_lm, lm_weight: a ``TokenNgramLM`` and its weight, for shallow fusion.
    """
    if method in TRANSDUCER_METHODS + FUSION_METHODS and not model.use_transducer:
        raise ValueError(f"{method} needs a transducer head; this model has CTC only: use ctc-greedy-search")
    if method in CTC_METHODS + LEXICON_METHODS and not model.use_ctc:
        raise ValueError(f"{method} needs a CTC head; this model is a transducer only: use greedy_search")
    encoder_out, encoder_out_lens = model.forward_encoder(x, x_lens)
    if method == "greedy_search":
        return greedy_search_batch(model, encoder_out, encoder_out_lens)
    if method == "modified_beam_search":
        return modified_beam_search(model, encoder_out, encoder_out_lens, beam=beam_size)
    if method in FUSION_METHODS:
        return modified_beam_search(model, encoder_out, encoder_out_lens, beam=beam_size,
                                    lm=token_lm, lm_weight=lm_weight)
    log_probs = model.ctc_output(encoder_out)
    if method == "ctc-greedy-search":
        return ctc_greedy_search(log_probs, encoder_out_lens, model.blank_id)
    if method == "ctc-prefix-beam-search":
        return ctc_prefix_beam_search(log_probs, encoder_out_lens, beam=beam_size, blank=model.blank_id)
    if method in LEXICON_METHODS:
        return lexicon_decoder.decode(log_probs, encoder_out_lens)
    raise ValueError(f"unknown decoding method {method!r}")


def decode_dataloader(decode_fn, dl, tokenizer, log_interval: int = 20,
                      words: bool = False) -> List[Result]:
    """(cut_id, ref words, hyp words) for every cut of ``dl`` (AsrDataset batches).

    ``decode_fn(inputs, lengths) -> token id lists`` does the recognition (PyTorch or ONNX);
    with ``words`` it returns word lists (lexicon decoding).
    """
    results: List[Result] = []
    for i, batch in enumerate(dl):
        if batch is None:  # every cut of the batch was unreadable (already logged)
            continue
        hyps = decode_fn(batch["inputs"], batch["lengths"])
        for cut_id, text, hyp in zip(batch["cut_ids"], batch["texts"], hyps):
            results.append((cut_id, text.split(), list(hyp) if words else tokenizer.decode(hyp).split()))
        if i % log_interval == 0:
            logging.info(f"batch {i}: {len(results)} utterances decoded")
    return results


def split_dataloaders(args: argparse.Namespace, tokenizer, splits: Sequence[str]):
    """(split, unshuffled loader of AsrDataset batches) for each split."""
    data = DataModule(args)
    for split in splits:
        yield split, data.test_dataloader(data.load_cuts(split), data.asr_dataset(tokenizer, train=False))


def decode_splits(args: argparse.Namespace) -> Dict[str, float]:
    """Decode ``args.test_splits``, write the result files, return {split: WER %}."""
    res_dir = Path(args.res_dir or Path(args.exp_dir) / args.decoding_method)
    key = decoding_key(args)
    setup_logger(res_dir / f"log-decode-{key}")
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    model, model_params = load_model(args, device)
    args.input_type = input_type(model_params)
    tokenizer = load_tokenizer(args.lang_dir)
    if tokenizer.vocab_size != model.vocab_size:
        raise ValueError(f"{args.lang_dir} has {tokenizer.vocab_size} tokens, the model {model.vocab_size}")

    lexicon = args.decoding_method in LEXICON_METHODS
    lex_decoder = lexicon_decoder(args) if lexicon else None
    fusion_lm = token_lm(args) if args.decoding_method in FUSION_METHODS else None

    def decode_fn(x: Tensor, x_lens: Tensor) -> List[List]:
        return decode_batch(model, x.to(device), x_lens.to(device), args.decoding_method,
                            beam_size_of(args), lex_decoder, fusion_lm, args.lm_weight)

    wers = {}
    for split, dl in split_dataloaders(args, tokenizer, args.test_splits):
        results = decode_dataloader(decode_fn, dl, tokenizer, words=lexicon)
        wers[split] = save_results(res_dir, split, {key: results})[key]
        logging.info(f"{split} {key}: WER {wers[split]:.2f}% ({len(results)} utterances)")
    for split, wer in wers.items():
        print(f"{split}\t{key}\tWER {wer:.2f}%")
    return wers


def main(args: Optional[argparse.Namespace] = None) -> Dict[str, float]:
    return decode_splits(args if args is not None else get_parser().parse_args())


if __name__ == "__main__":
    main()
