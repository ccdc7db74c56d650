"""Corpus-level caption metrics (METEOR, CIDEr-D, ROUGE-L, BLEU-4) computed with pycocoevalcap.

The numbers come from the reference coco-caption implementations so they are comparable with published
results. What this module adds is the plumbing those implementations lack: one long-lived METEOR java
process per scorer (java start-up costs seconds and evaluation runs every epoch), input checks with readable
errors, inputs cleaned so the METEOR line protocol cannot desynchronise, and a pure-Python stand-in for the
java PTB tokenizer that coco-caption runs before scoring.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
import weakref
from collections.abc import Hashable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor import meteor as _meteor_module
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

# A corpus of N captions costs METEOR well under 10 ms per caption; the timeout only exists so a wedged java
# process fails the evaluation instead of hanging training forever.
_METEOR_TIMEOUT_BASE_S = 120.0
_METEOR_TIMEOUT_PER_CAPTION_S = 0.25

# ----------------------------------------------------------------------------------------------------------
# Caption normalisation (pure-Python approximation of coco-caption's PTBTokenizer + punctuation removal)
# ----------------------------------------------------------------------------------------------------------

# Tokens coco-caption drops after PTB tokenisation, plus brackets: with -lowerCase the java tokenizer emits
# "-lrb-"/"-rrb-", which its upper-case removal list never matches; dropping them is what was intended.
_PUNCT_CHARS = frozenset(".?!,:;-'`\"()[]{}")
_UNICODE_PUNCT = str.maketrans(
    {
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2018": "'",
        "\u2019": "'",
        "\u2013": " -- ",
        "\u2014": " -- ",
        "\u2026": " ... ",
    }
)
# A single letter plus period ("plan b.") is split too: java keeps it as an initial only when the *next*
# caption in its batch does not start like a sentence, which is rare for captions ("A man ...").
# The abbreviations whose period the PTB lexer (stanford-corenlp 3.4.1, the jar pycocoevalcap runs) keeps, in
# the middle of a caption and at its end: its title, month, day, state, company and street lists, measured
# by running that jar on "a X. b" and "a b X." for each candidate.
_ABBREVIATIONS = (
    "mr|mrs|ms|dr|drs|prof|profs|sen|sens|rep|reps|atty|attys|lt|col|gen|messrs|gov|govs|adm|rev|maj|sgt|"
    "cpl|pvt|capt|st|ste|ave|pres|lieut|hon|brig|cmdr|comdr|pfc|spc|supt|supts|det|mme|mlle|invt|elec|"
    "natl|mfg|mtg|mt|ft|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec|mon|tue|tues|wed|thu|thurs|fri|"
    "ala|ariz|calif|colo|conn|ct|dak|fla|ga|ind|kan|kans|ky|md|mich|minn|mo|mont|neb|nev|okla|penn|tenn|"
    "va|vt|wis|wisc|wyo|inc|cos|co|corp|pty|ltd|plc|rt|bancorp|dept|bhd|assn|univ|intl|sys|tel|est|ext|sq|"
    "jr|sr|bros|blvd|rd|esq|etc|al|seq|bldg|vs|cf"
)
_ABBREVIATION = re.compile(r"^(?:[a-z]\.){2,}$|^(?:" + _ABBREVIATIONS + r")\.$")
# "'n'" (rock 'n' roll, rock'n'roll) is one PTB token; kept whole through the quote rules below.
_N_TOKEN, _N_HELD = re.compile(r"(?:(?<=\w)|(?<!\S))'n'(?=\w|\s|$)"), "\x00n\x00"
_SPLIT_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"''|``"), ' " '),
    (re.compile(r"\.\.\.+"), " ... "),
    (re.compile(r"--+"), " -- "),
    (re.compile(r"(?<!\S)-(?=\S)|(?<=\S)-(?!\S)"), " - "),  # leading/trailing hyphen; inner ones stay
    (re.compile(r"[\"()\[\]{}?!;]"), r" \g<0> "),
    (re.compile(r"(?<!\d)[,:]|[,:](?!\d)"), r" \g<0> "),  # keep 1,000 and 3:30 together
    (re.compile(r"(?<=\d)%"), " %"),
    (re.compile(r"#(?=\d)"), "# "),  # #1 -> # 1 (a #hashtag stays whole)
    (re.compile(r"[=~^]"), r" \g<0> "),
    (re.compile(r"<\w+>|[<>]"), r" \g<0> "),  # a <b> tag stays whole
    (re.compile(r"(?<=\w)\+(?=\d)"), " +"),  # 2+2 -> 2 +2 (a signed number, as java has it)
    (re.compile(r"(?<=\w)\+(?![+\d])"), " + "),  # a+b, c+ grade; c++ stays
    (re.compile(r"\$(?=\d)"), "$ "),
    (re.compile(r"(?<=\w)(n't)\b"), r" \1"),  # don't -> do n't, can't -> ca n't
    (re.compile(r"(?<=[^\W_])('s|'re|'ve|'m|'ll|'d)\b"), r" \1"),
    (re.compile(r"(?<=s)'(?=\s|$)"), " '"),  # dogs' -> dogs '
    (re.compile(r"(?:(?<=\s)|^)(['`])(?=\w)(?!(?:s|re|ve|m|ll|d)\b)"), r"\1 "),  # opening single quote
    (re.compile(r"(?<=\w)(['`])(?=\s|$)"), r" \1"),  # closing single quote
    (re.compile(r"\b(can)(not)\b"), r"\1 \2"),
    (re.compile(r"\b(gon|wan)(na)\b|\b(got)(ta)\b"), r"\1\3 \2\4"),
)


def _split_sentence_period(token: str) -> list[str]:
    """PTB splits final periods off a word unless it is an abbreviation ("u.s.", "mr.")."""
    stem = token.rstrip(".")
    if stem and stem != token and not _ABBREVIATION.match(token):
        return [stem, "."]
    return [token]


def normalize_caption(text: str) -> str:
    """Lower-case, tokenize and strip punctuation the way coco-caption's PTBTokenizer step does.

    coco-caption shells out to Stanford PTBTokenizer (java) with ``-lowerCase`` and then drops punctuation
    tokens; doing that per evaluation would cost a JVM start, so this reproduces the parts that matter for
    captions: lower-casing, splitting clitics ("dog's" -> "dog 's", "isn't" -> "is n't", "cannot" ->
    "can not"), splitting "%" and "$" off numbers, keeping "1,000", "3:30", "u.s." and hyphenated words
    whole, splitting # + = < > ~ ^ and 'n' as java does, keeping its abbreviations' periods ("ave.", "mt."),
    and removing . , ; : ? ! quotes, dashes, ellipses and brackets. Unlike java it also removes
    brackets and runs such as "?!", which the original keeps as tokens by accident.
    """
    text = _N_TOKEN.sub(f" {_N_HELD} ", text.lower().translate(_UNICODE_PUNCT))
    for pattern, replacement in _SPLIT_RULES:
        text = pattern.sub(replacement, text)
    text = text.replace(_N_HELD, "'n'")
    tokens = (piece for token in text.split() for piece in _split_sentence_period(token))
    return " ".join(token for token in tokens if not _is_punctuation(token))


def _is_punctuation(token: str) -> bool:
    return all(char in _PUNCT_CHARS for char in token)


# ----------------------------------------------------------------------------------------------------------
# METEOR process
# ----------------------------------------------------------------------------------------------------------


class _MeteorProcess(Meteor):
    """pycocoevalcap's METEOR wrapper with a lifecycle that survives errors, forks and garbage collection.

    Scoring (``compute_score``/``_stat``) and the jar are pycocoevalcap's. The constructor is replaced because
    upstream pipes java's stderr without ever reading it (a full pipe blocks java) and its ``__del__`` waits
    on a lock that an exception inside ``compute_score`` leaves held, and would kill the parent's java
    process when run in a forked child.
    """

    def __init__(self) -> None:  # Meteor.__init__ deliberately not called, see the class docstring
        jar_dir = os.path.dirname(os.path.abspath(_meteor_module.__file__))
        self.meteor_cmd = [
            "java",
            "-Dfile.encoding=UTF-8",
            "-Xmx2G",
            "-jar",
            _meteor_module.METEOR_JAR,
            "-",
            "-",
            "-stdio",
            "-l",
            "en",
            "-norm",
        ]
        try:
            self.meteor_p = subprocess.Popen(
                self.meteor_cmd,
                cwd=jar_dir,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        except FileNotFoundError as exc:
            raise RuntimeError(
                "METEOR needs a java runtime on PATH (e.g. apt-get install default-jre)"
            ) from exc
        self.lock = threading.Lock()
        self.owner_pid = os.getpid()

    def score(self, gts: dict[int, list[str]], res: dict[int, list[str]], timeout_s: float | None) -> float:
        """Corpus METEOR; kills java if it exceeds ``timeout_s`` so a wedged process raises instead of hanging."""
        watchdog = threading.Timer(timeout_s, self.meteor_p.kill) if timeout_s else None
        if watchdog is not None:
            watchdog.daemon = True
            watchdog.start()
        try:
            score, _ = self.compute_score(gts, res)
            return float(score)
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if self.lock.locked():  # upstream leaves its lock held when compute_score raises
                self.lock.release()

    def shutdown(self) -> None:
        """Stop java; in a forked child only forget it, the process belongs to the parent."""
        if os.getpid() != self.owner_pid or self.meteor_p.poll() is not None:
            return
        with contextlib.suppress(OSError):  # java may already have exited and closed the pipe
            self.meteor_p.stdin.close()
        self.meteor_p.kill()
        self.meteor_p.wait()

    def __del__(self) -> None:
        if hasattr(self, "meteor_p"):
            self.shutdown()


def _clean_for_meteor(text: str) -> str:
    """METEOR reads one line per request with fields separated by "|||": newlines desynchronise the protocol
    and "|" either splits a reference into two or becomes a scored token."""
    return " ".join(text.replace("|", " ").split())


# ----------------------------------------------------------------------------------------------------------
# Scorer
# ----------------------------------------------------------------------------------------------------------

_LIVE_SCORERS: weakref.WeakSet[CaptionScorer] = weakref.WeakSet()


def _reset_after_fork() -> None:
    """A forked child must not talk to the parent's java process or inherit a lock held by another thread."""
    for scorer in list(_LIVE_SCORERS):
        scorer._lock = threading.Lock()
        scorer._meteor = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


class CaptionScorer:
    """Corpus-level caption metrics from pycocoevalcap: METEOR, CIDEr-D, ROUGE-L (+ optional BLEU-4).

    Metric definitions (all corpus-level, returned as python floats):

    * ``meteor``: METEOR 1.5 (``-l en -norm``: exact, stem, synonym and paraphrase matches), computed by the
      java jar over the whole corpus in one EVAL request, as coco-caption does.
    * ``rouge_l``: mean over images of the LCS F-measure with beta = 1.2, where precision and recall are each
      the maximum over that image's references (possibly from different references).
    * ``cider_d``: pycocoevalcap's ``Cider``, which is the CIDEr-D variant (there is no separate CiderD
      class): for n = 1..4, tf-idf vectors of n-gram counts with idf = log(N images) - log(max(1, df)), df
      being the number of images whose references contain the n-gram (so idf comes from the evaluated
      references, not a fixed corpus, and a one-image corpus always scores 0); cosine similarity with the
      candidate's weights clipped to the reference's (min(g_c, g_r) * g_r / (|g_c| |g_r|)); a gaussian length
      penalty exp(-delta^2 / (2 * 6^2)) where delta is the difference in bigram counts (= the difference in
      word counts for non-empty captions); uniform mean over n, mean over references, times 10, then mean
      over images. No stemming. An exact match scores 10 only if, for every n, the caption has an n-gram
      that some other image's references lack (idf > 0), so it needs at least 4 words.
    * ``bleu_4``: corpus BLEU-4 with the "closest" reference-length brevity penalty.

    Captions go through :func:`normalize_caption` first (as coco-caption tokenizes before scoring) unless
    ``normalize=False``. A METEOR java process is started on the first call that needs it and reused until
    :meth:`close`; calls are serialised with a lock.
    """

    def __init__(
        self,
        metrics: Sequence[str] = ("meteor", "rouge_l", "cider_d"),
        *,
        normalize: bool = True,
        meteor_timeout_s: float | None = None,
    ) -> None:
        self.metrics = _validate_metric_names(metrics)
        self.normalize = normalize
        self.meteor_timeout_s = meteor_timeout_s
        self._lock = threading.Lock()
        self._meteor: _MeteorProcess | None = None
        _LIVE_SCORERS.add(self)

    def score(
        self, predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]
    ) -> dict[str, float]:
        """Score one prediction per id against that id's references; keys must match exactly."""
        gts, res = self._prepare(predictions, references)
        results: dict[str, float] = {}
        for name in self.metrics:
            results[name] = (
                self._meteor_score(gts, res) if name == "meteor" else _PURE_PYTHON_METRICS[name](gts, res)
            )
        return results

    def close(self) -> None:
        """Stop the METEOR java process; a later :meth:`score` starts a new one."""
        with self._lock:
            self._stop_meteor()

    def __enter__(self) -> CaptionScorer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        meteor = getattr(self, "_meteor", None)
        if meteor is not None:
            meteor.shutdown()

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the configuration only; a process or lock cannot cross a process boundary."""
        return {
            "metrics": self.metrics,
            "normalize": self.normalize,
            "meteor_timeout_s": self.meteor_timeout_s,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(
            state["metrics"], normalize=state["normalize"], meteor_timeout_s=state["meteor_timeout_s"]
        )

    def _prepare(
        self, predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]
    ) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
        """Validate, clean and re-key the inputs into the {int: [str, ...]} dicts pycocoevalcap expects."""
        _check_ids(predictions, references)
        clean = normalize_caption if self.normalize else _collapse_whitespace
        gts: dict[int, list[str]] = {}
        res: dict[int, list[str]] = {}
        for index, key in enumerate(predictions):
            res[index] = [clean(_as_prediction(key, predictions[key]))]
            gts[index] = [clean(ref) for ref in _as_references(key, references[key])]
        return gts, res

    def _meteor_score(self, gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
        gts = {key: [_clean_for_meteor(ref) for ref in refs] for key, refs in gts.items()}
        res = {key: [_clean_for_meteor(pred) for pred in preds] for key, preds in res.items()}
        timeout_s = self.meteor_timeout_s
        if timeout_s is None:
            timeout_s = _METEOR_TIMEOUT_BASE_S + _METEOR_TIMEOUT_PER_CAPTION_S * len(res)
        with self._lock:
            if self._meteor is None or self._meteor.meteor_p.poll() is not None:
                self._meteor = _MeteorProcess()
            try:
                return self._meteor.score(gts, res, timeout_s)
            except BaseException as exc:  # KeyboardInterrupt too: the line protocol is now out of sync
                self._stop_meteor()  # so the next call starts a fresh process
                if isinstance(exc, Exception):
                    raise RuntimeError(
                        f"METEOR java process failed (calls are killed after {timeout_s:g} s): {exc!r}"
                    ) from exc
                raise

    def _stop_meteor(self) -> None:
        if self._meteor is not None:
            self._meteor.shutdown()
            self._meteor = None


# ----------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------


def _validate_metric_names(metrics: Sequence[str] | str) -> tuple[str, ...]:
    """Reject unknown names up front so a typo in a recipe fails before training, not after the first epoch."""
    names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    supported = SUPPORTED_METRICS
    if not names:
        raise ValueError(f"no caption metrics requested; choose from {supported}")
    unknown = [name for name in names if name not in supported]
    if unknown:
        raise ValueError(f"unknown caption metric(s) {unknown}; supported: {supported}")
    return tuple(dict.fromkeys(names))


def _check_ids(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]) -> None:
    if not predictions and not references:
        raise ValueError("cannot score an empty set of captions")
    missing_refs = [key for key in predictions if key not in references]
    missing_preds = [key for key in references if key not in predictions]
    if missing_refs or missing_preds:
        raise ValueError(
            "prediction and reference ids differ: "
            f"{len(missing_preds)} id(s) without a prediction {_preview(missing_preds)}, "
            f"{len(missing_refs)} id(s) without references {_preview(missing_refs)}"
        )


def _preview(keys: Iterable[Hashable], limit: int = 10) -> str:
    keys = list(keys)
    shown = ", ".join(repr(key) for key in keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}]"


def _as_prediction(key: Hashable, prediction: object) -> str:
    if not isinstance(prediction, str):
        raise TypeError(f"prediction for id {key!r} must be a str, got {type(prediction).__name__}")
    return prediction


def _as_references(key: Hashable, refs: object) -> list[str]:
    # A bare string is a Sequence[str] of characters; scoring against single letters would be silently wrong.
    if isinstance(refs, str) or not isinstance(refs, Sequence):
        raise TypeError(f"references for id {key!r} must be a list of str, got {type(refs).__name__}")
    if not refs:
        raise ValueError(f"id {key!r} has no reference captions")
    if not all(isinstance(ref, str) for ref in refs):
        raise TypeError(f"references for id {key!r} must all be str")
    return list(refs)


def _collapse_whitespace(text: str) -> str:
    """pycocoevalcap splits on single spaces, so doubled spaces would become empty tokens."""
    return " ".join(text.split())


def _rouge_l(gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    return float(Rouge().compute_score(gts, res)[0])


def _cider_d(gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    # CiderScorer takes max() over document frequencies, which fails when every reference is empty.
    if not any(ref.split() for refs in gts.values() for ref in refs):
        return 0.0
    return float(Cider().compute_score(gts, res)[0])


def _bleu_4(gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    return float(Bleu(4).compute_score(gts, res, verbose=0)[0][3])


_PURE_PYTHON_METRICS = {"rouge_l": _rouge_l, "cider_d": _cider_d, "bleu_4": _bleu_4}
# What this scorer computes: METEOR through its Java process, the rest in Python (the recipe-time list in
# trainers/tasks/captioning/config.py names the same, torch-free; a test ties the two)
SUPPORTED_METRICS: tuple[str, ...] = ("meteor", *_PURE_PYTHON_METRICS)
