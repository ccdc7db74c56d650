"""Caption metrics: expected values are derived by hand in the comments, not by running the library.

Only two METEOR java processes are started in this file (~8 s each): the shared module fixture and the
restart in the lifecycle test. Everything else uses the pure-Python metrics.
"""

from __future__ import annotations

import gc
import math
import os
import pickle

import pytest

from trainers.metrics.captions import (
    SUPPORTED_METRICS,
    CaptionScorer,
    _MeteorProcess,
    normalize_caption,
)

BETA2 = 1.2**2


def rouge_f(lcs: int, cand_len: int, ref_len: int) -> float:
    """ROUGE-L F-measure with beta = 1.2, written out independently of pycocoevalcap."""
    p, r = lcs / cand_len, lcs / ref_len
    return (1 + BETA2) * p * r / (r + BETA2 * p)


@pytest.fixture(scope="module")
def scorer():
    with CaptionScorer(SUPPORTED_METRICS, normalize=False) as shared:
        yield shared


def only(metric: str, **kwargs) -> CaptionScorer:
    return CaptionScorer((metric,), **kwargs)


# ---------------------------------------------------------------- normalization (outputs checked against java)

# Outputs of pycocoevalcap's PTBTokenizer (java, -lowerCase, punctuation removed) for symbols, abbreviations
# and 'n': the next test runs the jar on them again.
PTB_SYMBOLS_AND_ABBREVIATIONS = [
    ("A sign that says #1 on it", "a sign that says # 1 on it"),
    ("a #hashtag sign", "a #hashtag sign"),
    ("Two plus two: 2+2=4 on a board", "two plus two 2 +2 = 4 on a board"),
    ("a+b and a c+ grade, c++ code, +5", "a + b and a c + grade c++ code +5"),
    ("a == b", "a = = b"),
    ("a<b, a <b, a<b> and a <b> tag", "a < b a < b a <b> and a <b> tag"),
    ("a>b", "a > b"),
    ("a wave~ ~5 a~b", "a wave ~ ~ 5 a ~ b"),
    ("x^2 on a blackboard", "x ^ 2 on a blackboard"),
    ("a 50/50 split, red/blue and/or a / b", "a 50/50 split red/blue and/or a / b"),
    ("A house on Elm Ave.", "a house on elm ave."),
    ("A street in Mt.", "a street in mt."),
    ("Mt. Fuji behind a lake near Ft. Worth", "mt. fuji behind a lake near ft. worth"),
    (
        "a man on 5th Ave. with Gen. Lee of Acme Inc. and Co.",
        "a man on 5th ave. with gen. lee of acme inc. and co.",
    ),
    ("a poster for rock'n'roll night", "a poster for rock 'n' roll night"),
    ("rock 'n' roll", "rock 'n' roll"),
]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("A man riding a wave on top of a surfboard.", "a man riding a wave on top of a surfboard"),
        ("A dog's ball, isn't it?", "a dog 's ball is n't it"),
        ("I can't, won't, cannot", "i ca n't wo n't can not"),
        ("Two men (one wearing a hat) play frisbee.", "two men one wearing a hat play frisbee"),
        ('A "stop" sign on a street corner.', "a stop sign on a street corner"),
        ("It's 3.5 meters & 50% off $5 at U.S. store.", "it 's 3.5 meters & 50 % off $ 5 at u.s. store"),
        (
            "A black-and-white cat; sitting: on a mat - outside -- today.",
            "a black-and-white cat sitting on a mat outside today",
        ),
        (
            "There is a clock that reads 10:45, with 1,000 people.",
            "there is a clock that reads 10:45 with 1,000 people",
        ),
        ("The kids' toys", "the kids toys"),
        ("hello...world", "hello world"),
        ("He said \u201chello\u201d \u2014 then left\u2026", "he said hello then left"),
        ("A  man\twith\nnewlines", "a man with newlines"),
        ("?!...", ""),
        *PTB_SYMBOLS_AND_ABBREVIATIONS,
    ],
)
def test_normalize_caption_matches_ptb_tokenizer(raw: str, expected: str) -> None:
    assert normalize_caption(raw) == expected
    assert normalize_caption(expected) == expected  # idempotent, so pre-normalised references are safe


def test_normalize_caption_equals_the_java_ptb_tokenizer_run_now() -> None:
    """The symbol, abbreviation and 'n' cases above, through pycocoevalcap's own PTBTokenizer (the
    stanford-corenlp jar, ~1 s of java): its outputs today are the literals above and ours."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    raws = [raw for raw, _ in PTB_SYMBOLS_AND_ABBREVIATIONS]
    java = PTBTokenizer().tokenize({i: [{"caption": raw}] for i, raw in enumerate(raws)})
    assert [java[i][0] for i in range(len(raws))] == [
        expected for _, expected in PTB_SYMBOLS_AND_ABBREVIATIONS
    ]
    assert [normalize_caption(raw) for raw in raws] == [java[i][0] for i in range(len(raws))]


def test_score_normalizes_by_default_and_can_opt_out() -> None:
    # "A Dog!" -> "a dog": identical to the reference, so ROUGE-L = 1. Without normalisation the tokens
    # "A", "Dog!" share nothing with "a", "dog": LCS = 0 -> 0.
    assert only("rouge_l").score({1: "A Dog!"}, {1: ["a dog"]})["rouge_l"] == pytest.approx(1.0)
    assert only("rouge_l", normalize=False).score({1: "A Dog!"}, {1: ["a dog"]})["rouge_l"] == 0.0


# ---------------------------------------------------------------- ROUGE-L


def test_rouge_l_from_lcs() -> None:
    # cand "the cat sat on the mat" (6), ref "the cat was sitting on the mat" (7): LCS "the cat on the mat" = 5
    # P = 5/6, R = 5/7, F = 2.44 * (25/42) / (5/7 + 1.44 * 5/6) = (61/42) / (67/35) = 305/402 = 0.75871
    result = only("rouge_l").score({"x": "the cat sat on the mat"}, {"x": ["the cat was sitting on the mat"]})
    assert result["rouge_l"] == pytest.approx(305 / 402)
    assert result["rouge_l"] == pytest.approx(rouge_f(5, 6, 7))


def test_rouge_l_takes_max_precision_and_max_recall_over_references_separately() -> None:
    # cand "a red car" (3). ref1 "a red car parked on the busy street" (8): LCS 3 -> P = 1, R = 3/8.
    # ref2 "red" (1): LCS 1 -> P = 1/3, R = 1. max P = 1 and max R = 1 come from different refs -> F = 1,
    # while ref1 alone gives 2.44 * 0.375 / (0.375 + 1.44) = 0.50413.
    alone = only("rouge_l").score({1: "a red car"}, {1: ["a red car parked on the busy street"]})["rouge_l"]
    both = only("rouge_l").score({1: "a red car"}, {1: ["a red car parked on the busy street", "red"]})
    assert alone == pytest.approx(0.915 / 1.815)
    assert both["rouge_l"] == pytest.approx(1.0)


def test_rouge_l_is_mean_over_images() -> None:
    preds = {1: "the cat sat on the mat", 2: "a dog"}
    refs = {1: ["the cat was sitting on the mat"], 2: ["a dog"]}
    assert only("rouge_l").score(preds, refs)["rouge_l"] == pytest.approx((305 / 402 + 1.0) / 2)


# ---------------------------------------------------------------- CIDEr-D

TWO_IMAGES = {"im1": ["a black cat sleeps"], "im2": ["two dogs run fast"]}


def test_cider_d_is_ten_for_exact_matches() -> None:
    # N = 2 images with no shared n-gram: every reference n-gram has df = 1, idf = log 2 - log 1 > 0.
    # candidate == reference -> cosine 1 for n = 1..4, length delta 0 -> mean 1, x10 -> 10 per image.
    preds = {key: refs[0] for key, refs in TWO_IMAGES.items()}
    assert only("cider_d").score(preds, TWO_IMAGES)["cider_d"] == pytest.approx(10.0)


def test_cider_d_is_zero_without_shared_ngrams() -> None:
    # im1's candidate shares no n-gram with its reference -> 0; im2 exact -> 10; corpus mean 5.
    preds = {"im1": "green grass", "im2": "two dogs run fast"}
    assert only("cider_d").score(preds, TWO_IMAGES)["cider_d"] == pytest.approx(5.0)


def test_cider_d_partial_match_by_hand() -> None:
    # im1: cand "a black cat" vs ref "a black cat sleeps"; all idf equal (= log 2), so it cancels in cosines.
    #   n=1: 3 shared of cand 3 / ref 4 unigrams  -> 3 / (sqrt3 * 2)   = sqrt(3)/2
    #   n=2: 2 shared of 2 / 3 bigrams            -> 2 / (sqrt2 * sqrt3) = sqrt(2/3)
    #   n=3: 1 shared of 1 / 2 trigrams           -> 1 / sqrt2
    #   n=4: candidate has no 4-gram              -> 0
    #   gaussian penalty: bigram counts 2 vs 3, delta = -1 -> exp(-1 / (2 * 6^2)) = exp(-1/72)
    # im1 = 10 * exp(-1/72) * mean(...) = 5.8917; im2 exact = 10; corpus = 7.9458
    im1 = 10 * math.exp(-1 / 72) * (math.sqrt(3) / 2 + math.sqrt(2 / 3) + 1 / math.sqrt(2) + 0) / 4
    preds = {"im1": "a black cat", "im2": "two dogs run fast"}
    assert only("cider_d").score(preds, TWO_IMAGES)["cider_d"] == pytest.approx((im1 + 10) / 2)
    assert (im1 + 10) / 2 == pytest.approx(7.9458, abs=1e-4)


def test_cider_d_is_zero_for_a_single_image_corpus() -> None:
    # idf = log(N) - log(df) = log 1 - log 1 = 0 for every reference n-gram: the corpus gives no signal.
    assert only("cider_d").score({1: "a black cat"}, {1: ["a black cat"]})["cider_d"] == 0.0


# ---------------------------------------------------------------- BLEU-4


def test_bleu_4_brevity_penalty() -> None:
    # cand "a black cat sleeps" (4) vs ref with one more word (5): every n-gram precision is 1, so
    # BLEU-4 = BP = exp(1 - 5/4) = 0.77880.
    result = only("bleu_4").score({1: "a black cat sleeps"}, {1: ["a black cat sleeps here"]})
    assert result["bleu_4"] == pytest.approx(math.exp(-0.25), rel=1e-6)


# ---------------------------------------------------------------- METEOR (shared java process)


def test_all_metrics_are_plain_floats(scorer: CaptionScorer) -> None:
    result = scorer.score({"im1": "a black cat sleeps", "im2": "two dogs run fast"}, TWO_IMAGES)
    assert list(result) == list(SUPPORTED_METRICS)
    assert all(type(value) is float for value in result.values())
    assert result["meteor"] == pytest.approx(1.0, abs=1e-3)
    assert result["cider_d"] == pytest.approx(10.0)
    assert result["rouge_l"] == pytest.approx(1.0)
    assert result["bleu_4"] == pytest.approx(1.0, abs=1e-6)


def test_meteor_orders_by_overlap(scorer: CaptionScorer) -> None:
    ref = {1: ["a dog runs on the grass"]}

    def meteor(candidate: str) -> float:
        return scorer.score({1: candidate}, ref)["meteor"]

    exact, five_of_six, three_of_six, none = (
        meteor("a dog runs on the grass"),
        meteor("a dog runs on the beach"),
        meteor("a dog sleeps in the house"),
        meteor("green kites fly"),
    )
    assert exact == pytest.approx(1.0, abs=1e-3)
    assert exact > five_of_six > three_of_six > none
    assert none == 0.0


def test_meteor_credits_stem_matches_that_rouge_ignores(scorer: CaptionScorer) -> None:
    # Against "a dog runs" both candidates share only the exact token "a": LCS = 1, P = R = 1/3, so
    # ROUGE-L = 1/3 for both. METEOR also matches "dogs"~"dog" and "running"~"runs" by stem.
    ref = {1: ["a dog runs"]}
    stems = scorer.score({1: "a dogs running"}, ref)
    unrelated = scorer.score({1: "a cats sleeping"}, ref)
    assert stems["rouge_l"] == unrelated["rouge_l"] == pytest.approx(1 / 3)
    assert stems["meteor"] > unrelated["meteor"] + 0.2


def test_meteor_survives_protocol_breaking_text(scorer: CaptionScorer) -> None:
    # A raw newline ends METEOR's request line early and "|" is its field separator; both are cleaned,
    # so this is an exact match, and the process still answers the next call.
    dirty = scorer.score({1: "a dog\nruns ||| fast |"}, {1: ["a dog runs fast"]})
    assert dirty["meteor"] == pytest.approx(1.0, abs=1e-3)
    assert scorer.score({1: "a cat"}, {1: ["a cat"]})["meteor"] == pytest.approx(1.0, abs=1e-3)


def test_empty_predictions_do_not_crash(scorer: CaptionScorer) -> None:
    exact = scorer.score({"im1": "a black cat sleeps", "im2": "two dogs run fast"}, TWO_IMAGES)
    empty = scorer.score({"im1": "", "im2": "two dogs run fast"}, TWO_IMAGES)
    assert all(math.isfinite(value) for value in empty.values())
    assert empty["meteor"] < exact["meteor"]
    assert empty["cider_d"] == pytest.approx(5.0)  # (0 + 10) / 2
    assert empty["rouge_l"] == pytest.approx(0.5)  # (0 + 1) / 2


def test_empty_references_do_not_crash() -> None:
    result = CaptionScorer(("rouge_l", "cider_d", "bleu_4")).score({1: "a dog", 2: ""}, {1: ["..."], 2: [""]})
    assert result["cider_d"] == 0.0
    assert all(math.isfinite(value) for value in result.values())


def test_meteor_process_is_reused_then_restarted_after_close(scorer: CaptionScorer) -> None:
    scorer.score({1: "a cat"}, {1: ["a cat"]})
    process = scorer._meteor.meteor_p
    scorer.score({1: "a dog"}, {1: ["a dog"]})
    assert scorer._meteor.meteor_p is process  # one java process for repeated calls

    scorer.close()
    assert process.poll() is not None  # java has exited
    assert scorer.score({1: "a cat"}, {1: ["a cat"]})["meteor"] == pytest.approx(1.0, abs=1e-3)
    assert scorer._meteor.meteor_p.pid != process.pid


def test_context_manager_and_garbage_collection_stop_java() -> None:
    # Inject the process instead of scoring, so no 8 s paraphrase-table load is waited for.
    with CaptionScorer(("meteor",)) as managed:
        managed._meteor = _MeteorProcess()
        process = managed._meteor.meteor_p
    assert process.poll() is not None

    collected = CaptionScorer(("meteor",))
    collected._meteor = _MeteorProcess()
    process = collected._meteor.meteor_p
    del collected
    gc.collect()
    assert process.wait(timeout=10) is not None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_leaves_parent_java_alive() -> None:
    meteor = _MeteorProcess()
    try:
        pid = os.fork()
        if pid == 0:  # child: dropping the inherited wrapper must not kill the parent's java
            meteor.shutdown()
            os._exit(0)
        os.waitpid(pid, 0)
        assert meteor.meteor_p.poll() is None
    finally:
        meteor.shutdown()
    assert meteor.meteor_p.poll() is not None


def test_pickle_keeps_configuration_only() -> None:
    original = CaptionScorer(("rouge_l", "bleu_4"), normalize=False, meteor_timeout_s=5.0)
    clone = pickle.loads(pickle.dumps(original))
    assert (clone.metrics, clone.normalize, clone.meteor_timeout_s) == (("rouge_l", "bleu_4"), False, 5.0)
    assert clone._meteor is None


# ---------------------------------------------------------------- input validation


def test_default_metrics() -> None:
    assert CaptionScorer().metrics == ("meteor", "rouge_l", "cider_d")


def test_unknown_metric_lists_supported_ones() -> None:
    with pytest.raises(ValueError, match=r"cider.*supported.*'meteor', 'rouge_l', 'cider_d', 'bleu_4'"):
        CaptionScorer(("meteor", "cider"))
    with pytest.raises(ValueError, match="no caption metrics"):
        CaptionScorer(())


def test_mismatched_ids_are_named() -> None:
    with pytest.raises(ValueError, match=r"without a prediction \['img3'\].*without references \['img9'\]"):
        only("rouge_l").score({"img1": "a", "img9": "b"}, {"img1": ["a"], "img3": ["c"]})


def test_empty_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="empty"):
        only("rouge_l").score({}, {})


def test_malformed_references_are_rejected() -> None:
    with pytest.raises(TypeError, match="list of str"):
        only("rouge_l").score({1: "a dog"}, {1: "a dog"})  # a bare str would be scored letter by letter
    with pytest.raises(ValueError, match="no reference captions"):
        only("rouge_l").score({1: "a dog"}, {1: []})
    with pytest.raises(TypeError, match="must be a str"):
        only("rouge_l").score({1: None}, {1: ["a dog"]})


def test_recipe_metric_names_are_the_scorer_s() -> None:
    """The torch-free list a recipe is checked against names exactly what the scorer computes."""
    from trainers.metrics.captions import SUPPORTED_METRICS as scorer_metrics
    from trainers.tasks.captioning.config import SUPPORTED_METRICS as recipe_metrics

    assert scorer_metrics == recipe_metrics
